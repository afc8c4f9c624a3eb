"""``python -m bench sweep``: which training flags learn the most in a fixed wall-clock budget.

Each configuration is a set of ``minigpt-tui train`` flags.  Every one runs as its own fresh
process, exactly as a user would run it (``python -m tui train --dataset DATA --time BUDGET
FLAGS``), one after another on an otherwise idle machine, into a temporary checkpoint store that
shares one cache (so each tokenizer is trained and each split tokenized once, outside the
budgets).  Then ``python -m tui eval`` scores the checkpoint on the **whole validation split**:
bits per byte (comparable across tokenizers) and, on word-level data, word perplexity.

The default grid varies one thing at a time around the base (the product's defaults): learning
rate, batch, tokenizer size, schedule, weight decay, AdamW's beta2, the embeddings' rate, the
activation, shape, optimizer, architecture.
``--config "FLAGS"`` (repeatable) runs your own list instead, e.g. the winners together, or the
winners at ``--time 30m``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

# One change at a time from the base (flags added to the base's).  The base itself is the
# first entry: the product's defaults with no flags at all.
DEFAULT_GRID = (
    "",
    "--lr 1e-3",
    "--lr 3e-3",
    "--batch-size 4",
    "--batch-size 16",
    "--tokenizer bpe:8192",
    "--tokenizer bpe:32768",
    "--tokenizer gpt2",
    "--warmdown 0.6",
    "--weight-decay 0",
    "--adam-beta2 0.95",
    "--embedding-lr-scale 1",
    "--activation gelu",
    "--arch llama",
    "--optimizer muon",
    "--preset small",
)


def _env(root: Path) -> dict:
    env = dict(os.environ)
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"), ("XDG_CONFIG_HOME", "config")):
        env[var] = str(root / sub)
    env.setdefault("MINIGPT_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _peak_rss_mb(proc: subprocess.Popen) -> float | None:
    """VmHWM of a child while it runs (read until it exits)."""
    peak = None
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except OSError:
            pass
        time.sleep(0.5)
    return round(peak, 1) if peak is not None else None


def run_one(flags: str, data: str, budget: str, root: Path, name: str, log) -> dict:
    env = _env(root)
    # no evaluations during the run (they cost wall time, not budget): the whole split is scored after
    cmd = [sys.executable, "-m", "tui", "train", "--dataset", data, "--time", budget, "--name", name,
           "--eval-every", str(10**9), *shlex.split(flags)]
    log(f"[sweep] {name}: {' '.join(cmd[3:])}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    rss = _peak_rss_mb(proc)
    reader.join()
    wall = time.perf_counter() - t0
    row: dict = {"flags": flags, "name": name, "wall_s": round(wall, 1), "train_peak_rss_mb": rss}
    if proc.returncode != 0:
        lines = [line.strip() for line in out_lines if line.strip()]
        row["error"] = lines[-1] if lines else f"exit code {proc.returncode}"
        log(f"[sweep] {name} failed: {row['error']}")
        return row
    from engine.store.checkpoints import META_FILE
    from engine.store.record import CheckpointRecord

    rec = CheckpointRecord.from_json(json.loads((root / "data" / "minigpt-tui" / "checkpoints" / name / META_FILE).read_text()))
    ev = subprocess.run([sys.executable, "-m", "tui", "eval", "--checkpoint", name], env=env,
                        capture_output=True, text=True)
    if ev.returncode != 0:
        lines = ev.stderr.strip().splitlines()
        row["error"] = f"eval: {lines[-1] if lines else f'exit code {ev.returncode}'}"
        return row
    score = json.loads(ev.stdout.strip().splitlines()[-1])
    train_s = rec.train_time_s or 0
    row.update(
        tokenizer=rec.tokenizer, vocab_size=rec.vocab_size, preset=rec.preset, arch=rec.arch,
        optimizer=rec.optimizer, lr=rec.lr, batch_size=rec.batch_size, params=rec.params,
        dtype=rec.dtype, steps=rec.steps, tokens_seen=rec.tokens_seen,
        train_time_s=train_s, overhead_s=rec.overhead_s,
        tokens_per_s=round(rec.tokens_seen / train_s, 1) if train_s and rec.tokens_seen else None,
        val_loss=score["loss"], val_bits_per_byte=score["bits_per_byte"], val_word_perplexity=score.get("word_perplexity"),
        val_tokens=score["tokens"],
        # conversations (engine.evaluation.chat_scores): end-of-turn rate, mean reply tokens, reply-ranking top-1
        val_eot_rate=score.get("eot_rate"), val_reply_tokens=score.get("reply_tokens"), val_ranking_top1=score.get("ranking_top1"),
    )
    log(f"[sweep] {name}: bpb {row['val_bits_per_byte']:.4f} word ppl {row['val_word_perplexity']} "
        f"({row['steps']} steps, {row['tokens_per_s']} tok/s)")
    return row


def sweep(data: str, budget: str, configs: list[str], keep: str | None = None, log=None) -> dict:
    from bench.run import machine

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="minigpt-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tag = datetime.now().strftime("%Y%m%d-%H%M%S")  # run names of their own: a --keep store is reused
    rows = []
    try:
        # tokenizers and tokenized splits first, outside every budget: a 1-step run per tokenizer
        prepared = set()
        for flags in configs:
            words = shlex.split(flags)
            tok = words[words.index("--tokenizer") + 1] if "--tokenizer" in words else None
            if tok in prepared:
                continue
            prepared.add(tok)
            extra = ["--tokenizer", tok] if tok else []
            subprocess.run([sys.executable, "-m", "tui", "train", "--dataset", data, "--max-steps", "1", "--name",
                            f"prep-{tag}-{len(prepared)}", *extra], env=_env(root), capture_output=True, check=False)
        for i, flags in enumerate(configs):
            rows.append(run_one(flags, data, budget, root, f"sweep-{tag}-{i:02d}", log))
    finally:
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    scored = [r for r in rows if "val_bits_per_byte" in r]
    best = min(scored, key=lambda r: r["val_bits_per_byte"]) if scored else None
    return {
        "kind": "sweep",
        "date": started,
        "machine": machine(),
        "data": data,
        "budget": budget,
        "score": "whole validation split: bits per byte (and word perplexity on word-level text), lower is better",
        "method": "each configuration a fresh `python -m tui train --dataset DATA --time BUDGET FLAGS` process, one after "
        "another; flags are added to the product's defaults; tokenizers and tokenized data prepared before, outside "
        "the budgets; scored by `python -m tui eval` on the whole validation split",
        "rows": rows,
        "best": best["flags"] if best else None,
    }


def table(report: dict) -> str:
    rows = sorted(report["rows"], key=lambda r: r.get("val_bits_per_byte") or 99)
    if any(r.get("val_ranking_top1") is not None for r in rows):
        return chat_table(report, rows)
    lines = [
        f"sweep: {report['budget']} per run on {report['data']} ({report['date']})",
        "| flags (added to the defaults) | val bits/byte | val word ppl | steps | tokens/s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['flags'] or '(defaults)'}` | failed: {r['error']} | | | | |")
            continue
        wp = r.get("val_word_perplexity")
        lines.append(
            f"| `{r['flags'] or '(defaults)'}` | {r['val_bits_per_byte']:.4f} | {wp:.1f} | {r['steps']} | {r['tokens_per_s']:,.0f} | "
            f"{r['train_peak_rss_mb']} |" if wp is not None else
            f"| `{r['flags'] or '(defaults)'}` | {r['val_bits_per_byte']:.4f} | - | {r['steps']} | {r['tokens_per_s']:,.0f} | {r['train_peak_rss_mb']} |"
        )
    return "\n".join(lines)


def chat_table(report: dict, rows: list[dict]) -> str:
    """The table of a sweep on conversations: the assistant tokens' bits per byte and the chat scores."""
    lines = [
        f"sweep: {report['budget']} per run on {report['data']} ({report['date']})",
        "| flags (added to the defaults) | val bits/byte (assistant) | end-of-turn | reply tokens | ranking top-1 | steps | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['flags'] or '(defaults)'}` | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| `{r['flags'] or '(defaults)'}` | {r['val_bits_per_byte']:.4f} | {pct(r.get('val_eot_rate'))} | {r.get('val_reply_tokens')} | "
            f"{pct(r.get('val_ranking_top1'))} | {r['steps']} | {r['tokens_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", default="5m", help="training budget per configuration (90s, 5m, 30m; default 5m)")
    ap.add_argument("--data", default=None, help="dataset folder or file (default ../shared/data/wikitext-2)")
    ap.add_argument("--config", action="append", default=None, metavar="FLAGS",
                    help="train flags of one configuration (repeatable; '' is the defaults); default: the built-in grid")
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep checkpoints and caches in DIR")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)
    from engine.errors import UsageError
    from engine.training.schedule import parse_duration

    try:
        parse_duration(args.time)
    except UsageError as exc:
        ap.error(str(exc))
    data = args.data or "../shared/data/wikitext-2"
    report = sweep(data, args.time, args.config if args.config is not None else list(DEFAULT_GRID), args.keep)
    text = json.dumps(report, indent=2)
    print(text)
    print()
    print(table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0
