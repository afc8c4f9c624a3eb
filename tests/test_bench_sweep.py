"""``python -m bench sweep``: real training processes, scored on the validation split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA, skip_unless_ci

WIKITEXT = SHARED_DATA / "wikitext-2"


def _small_wikitext(folder):
    """The first lines of WikiText-2's train and validation splits (word-level)."""
    if not (WIKITEXT / "wiki.train.tokens").is_file():
        skip_unless_ci(f"WikiText-2 not found at {WIKITEXT}")
    folder.mkdir()
    for name, lines in (("wiki.train.tokens", 1500), ("wiki.valid.tokens", 200)):
        with open(WIKITEXT / name, encoding="utf-8") as f:
            (folder / name).write_text("".join(next(f) for _ in range(lines)), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_sweep_trains_each_configuration_and_scores_it(tmp_path, cli_env):
    data = _small_wikitext(tmp_path / "wiki")
    out = tmp_path / "sweep.json"
    configs = ["--preset tiny --tokenizer bpe:512", "--preset tiny --tokenizer bpe:512 --lr 1e-2", "--preset nope"]
    cmd = [sys.executable, "-m", "bench", "sweep", "--time", "8s", "--data", str(data), "--out", str(out)]
    for flags in configs:
        cmd += ["--config", flags]
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["kind"] == "sweep" and report["budget"] == "8s" and [r["flags"] for r in report["rows"]] == configs
    good, bad = report["rows"][:2], report["rows"][2]
    for row in good:  # trained for the budget, then scored on the whole validation split
        assert row["preset"] == "tiny" and 256 < row["vocab_size"] <= 512
        assert row["steps"] >= 1 and 6 <= row["train_time_s"] <= 20, row
        assert 0 < row["val_bits_per_byte"] < 10 and row["val_word_perplexity"] > 1  # word-level data: word perplexity too
        assert row["train_peak_rss_mb"] > 50
    assert [r["lr"] for r in good] == [pytest.approx(3e-3), pytest.approx(1e-2)]  # the tiny preset's rate, then the flag's
    assert "invalid choice: 'nope'" in bad["error"] and "val_bits_per_byte" not in bad  # a failed run is reported, not scored
    assert report["best"] in configs[:2]
    assert "| `--preset nope` | failed:" in done.stdout  # the table names the failure
