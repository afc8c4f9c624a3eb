"""``python -m bench --quick`` runs end to end and writes a complete report (not the targets)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA, skip_unless_ci

WIKITEXT = SHARED_DATA / "wikitext-2"

REQUIRED = [
    "train.useful_tokens_per_s.baseline",
    "train.useful_tokens_per_s.engine",
    "train.step_tokens_per_s.baseline",
    "train.step_tokens_per_s.engine",
    "quality.baseline_bpb",
    "quality.engine_bpb",
    "generation.baseline_tokens_per_s",
    "generation.engine_tokens_per_s",
    "generation.baseline_ttft_ms",
    "generation.engine_ttft_ms",
    "memory.train_peak_rss_mb",
    "memory.chat_peak_rss_mb",
    "machine.cpu",
    "machine.cores",
    "machine.torch",
    "machine.date",
]
# present, but null allowed: not reached within the quick budget / no app module / no GPU
NULLABLE = ["quality.engine_seconds_to_baseline_bpb", "app.first_frame_ms", "app.first_token_ms"]


def _get(report: dict, dotted: str):
    node = report
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"missing key {dotted}"
        node = node[part]
    return node


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_report_is_complete(tmp_path, cli_env):
    if not WIKITEXT.is_dir():
        skip_unless_ci(f"WikiText-2 not found in {WIKITEXT}")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data", str(WIKITEXT), "--out", str(out)],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout[: proc.stdout.rindex("}") + 1]) == report  # the JSON printed is the one written
    assert "train useful tokens/s" in proc.stdout  # and the table
    for key in REQUIRED:
        value = _get(report, key)
        if key.startswith("machine."):
            assert value, key
        else:
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    for key in NULLABLE:
        value = _get(report, key)
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0), (key, value)
    if (ROOT / "bench" / "app_latency.py").is_file():
        assert report["app"].get("first_frame_ms") is not None or report["app"].get("error"), report["app"]
    assert "gpu" in report
    if report["gpu"] is not None:
        assert report["gpu"]["seed"]["tokens_per_s"] > 0
