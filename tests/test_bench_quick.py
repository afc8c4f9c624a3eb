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
    "train.useful_bytes_per_s.baseline",
    "train.useful_bytes_per_s.engine",
    "train.useful_bytes_ratio",
    "train.useful_tokens_per_s.baseline",
    "train.useful_tokens_per_s.engine",
    "train.step_tokens_per_s.baseline",
    "train.step_tokens_per_s.engine",
    "train.bytes_per_token.baseline",
    "train.bytes_per_token.engine",
    "quality.baseline_bpb",
    "quality.engine_bpb",
    "quality.curve_set.baseline_bpb",
    "quality.curve_set.engine_final_bpb",
    "generation.baseline_tokens_per_s",
    "generation.engine_tokens_per_s",
    "generation.baseline_ttft_ms",
    "generation.engine_ttft_ms",
    "memory.train_peak_rss_mb",
    "memory.chat_peak_rss_mb",
    "app.first_frame_ms",
    "app.first_token_ms",
    "machine.cpu",
    "machine.cores",
    "machine.torch",
    "machine.date",
    "machine.precision.engine_cpu",
]
# present, but null allowed: not reached within the quick budget
NULLABLE = ["quality.engine_seconds_to_baseline_bpb"]


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
    assert "train useful bytes/s" in proc.stdout  # and the table, bytes/s first
    assert proc.stdout.index("train useful bytes/s") < proc.stdout.index("train useful tokens/s")
    check_report(report)


def check_report(report: dict) -> None:
    """Every key present, and the figures consistent with each other."""
    for key in REQUIRED:
        value = _get(report, key)
        if key.startswith("machine."):
            assert value, key
        else:
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    for key in NULLABLE:
        value = _get(report, key)
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0), (key, value)
    assert "error" not in report["app"], report["app"]

    # the figures agree with each other
    t, q, m = report["train"], report["quality"], report["memory"]
    for side in ("baseline", "engine"):
        bytes_s = t["useful_tokens_per_s"][side] * t["bytes_per_token"][side]
        assert t["useful_bytes_per_s"][side] == pytest.approx(bytes_s, rel=1e-6), side
        assert 1.5 < t["bytes_per_token"][side] < 8, t["bytes_per_token"]  # English text, byte-level BPE
        assert t["useful_tokens_per_s"][side] <= t["step_tokens_per_s"][side] * (1 + 1e-9)
    assert t["useful_bytes_ratio"] == pytest.approx(t["useful_bytes_per_s"]["engine"] / t["useful_bytes_per_s"]["baseline"])
    assert 0 < t["baseline_useful_fraction"] < 1  # the tutorial pads: some of its tokens are padding
    for bpb in (q["baseline_bpb"], q["engine_bpb"], q["curve_set"]["baseline_bpb"], q["curve_set"]["engine_final_bpb"]):
        assert 0.3 < bpb < 8, q  # bits per byte of a model that has seen some text
    # time to quality: the baseline is scored on the very text of the engine's curve
    # (the first token of each block has no prediction, and the two tokenizers cut blocks at
    # different places: the scored bytes differ by those few tokens only)
    scored = q["curve_set"]["bytes"]
    assert abs(scored["baseline"] - scored["engine"]) <= 0.02 * scored["engine"], q["curve_set"]
    reach = q["engine_seconds_to_baseline_bpb"]
    if reach is not None:
        assert reach <= q["engine_train_s"] + 1
        first = next(e for e in q["engine_curve"] if e["bpb"] <= q["curve_set"]["baseline_bpb"])
        assert first["t_s"] == reach
    # memory at the product's settings
    from engine.training.config import TrainConfig

    assert m["eval_blocks"] == TrainConfig().eval_blocks == 256
    assert 100 < m["train_peak_rss_mb"] < 8000 and 100 < m["chat_peak_rss_mb"] < 8000
    isa = report["machine"]["isa"]
    assert set(isa) == {"AVX2", "AVX-512", "AVX512-BF16", "AMX-BF16", "AMX"} and all(isinstance(v, bool) for v in isa.values())
    assert report["machine"]["precision"]["engine_cpu"] in ("fp32", "bf16")
    assert "useful_bytes_ratio>=10" in report["targets"]
    assert "gpu" in report
    if report["gpu"] is not None:
        assert report["gpu"]["path"].startswith("TrainingJob")
        assert report["gpu"]["seed"]["tokens_per_s"] > 0 and report["gpu"]["gpt2"]["tokens_per_s"] > 0
