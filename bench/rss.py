"""Peak resident memory of one task, measured in a fresh process.

``python -m bench.rss train DATA STEPS [TOKENIZER]``: train the seed preset for STEPS steps with
the product's evaluation settings (``TrainConfig`` defaults: 256 validation blocks, 48-token sample).
``python -m bench.rss chat CHECKPOINT TOKENS``: load a checkpoint and stream a reply.
Prints one JSON line: {"peak_rss_mb": ...} (this process's VmHWM / ru_maxrss).
The parent runs it with the bench's environment (XDG dirs, offline).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: list[str], env: dict, timeout: float = 600) -> float | None:
    """Run this module in a subprocess; its peak RSS in MB (None when it failed)."""
    proc = subprocess.run([sys.executable, "-m", "bench.rss", *args], env=env, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line).get("peak_rss_mb")
    sys.stderr.write(f"bench.rss {args[0]} failed: {proc.stderr.strip().splitlines()[-1:] }\n")
    return None


def main(argv: list[str]) -> int:
    what = argv[0]
    if what == "train":
        from engine.events import TrainFinished
        from engine.training.config import TrainConfig
        from engine.training.job import TrainingJob

        data, steps = argv[1], int(argv[2])
        tokenizer = argv[3] if len(argv) > 3 else "gpt2"
        # the product's settings (eval_blocks, sample length: TrainConfig's defaults), one eval at the end
        result = TrainingJob(
            TrainConfig(dataset=data, preset="seed", tokenizer=tokenizer, max_steps=steps, eval_every=steps,
                        name=f"rss-{tokenizer.replace(':', '-')}")
        ).run()
        ok = isinstance(result, TrainFinished)
    elif what == "chat":
        from engine.events import GenerationFinished
        from engine.generation.chat_model import ChatModel
        from engine.store.settings import Sampling

        chat = ChatModel.from_checkpoint(argv[1], device="cpu")
        events = list(chat.stream("The history of the", Sampling(max_new_tokens=int(argv[2]), seed=0)))
        ok = isinstance(events[-1], GenerationFinished)
    else:
        raise SystemExit(f"unknown task {what}")
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
