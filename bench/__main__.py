"""``python -m bench [--quick] [--data DIR] [--budget-min N] [--out report.json]``; ``python -m bench sweep --help``;
``python -m bench per-step --help``"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

DEFAULT_DATA = str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikitext-2")


def _clean(obj):
    """JSON-safe: non-finite floats become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:
        os.environ.setdefault("MINIGPT_OFFLINE", "1")
        from .sweep import main as sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["per-step"]:
        os.environ.setdefault("MINIGPT_OFFLINE", "1")
        from .per_step import main as per_step_main

        return per_step_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: data subset, short budget, one round (CI)")
    ap.add_argument("--data", default=None, help="WikiText-2 folder (default ../shared/data/wikitext-2)")
    ap.add_argument("--budget-min", type=float, default=None, help="training wall budget per side, minutes (default 10; --quick 0.25)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating throughput rounds (default 2; --quick 1)")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)

    os.environ.setdefault("MINIGPT_OFFLINE", "1")
    data = args.data or (os.path.join("..", "shared", "data", "wikitext-2") if Path("../shared/data/wikitext-2").is_dir() else DEFAULT_DATA)
    budget = args.budget_min if args.budget_min is not None else (0.25 if args.quick else 10.0)
    if budget <= 0:
        ap.error("--budget-min must be > 0")

    from .run import run, table

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: stdout is the report's
        report = _clean(run(data, budget_min=budget, quick=args.quick, rounds=args.rounds))
    text = json.dumps(report, indent=2)
    print(text)
    print()
    print(table(report))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
