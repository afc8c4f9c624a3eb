"""The headless command line: ``minigpt-tui train|generate|chat|checkpoints|eval``.

``minigpt-tui`` with no command opens the Textual app; that launcher is passed in by
``tui.__main__`` so this module never imports Textual.  Exit codes: 0 ok, 1 failure,
2 usage error, 130 interrupted (SIGINT, after a clean save), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Sequence

from engine.errors import EngineError, UsageError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INT, EXIT_TERM = 0, 1, 2, 130, 143
EVAL_CHAT_CONVERSATIONS = 500  # eval scores a chat model's replies on the split's first 500 conversations at most


class _OneLineErrors:
    def error(self, message):  # one line, exit code 2 (argparse would print the whole usage first)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Parser(_OneLineErrors, argparse.ArgumentParser):
    pass


def train_parser() -> argparse.ArgumentParser:
    """``minigpt-tui train``'s flags: the fields of ``TrainConfig``, made into flags by
    transformers' ``HfArgumentParser``.  Built only for that command: importing transformers
    would delay every other command, the app's first frame above all."""
    from transformers import HfArgumentParser

    from engine.training.config import TrainConfig

    class TrainParser(_OneLineErrors, HfArgumentParser):
        pass

    return TrainParser(TrainConfig, prog="minigpt-tui train", description=TRAIN_HELP, formatter_class=argparse.HelpFormatter)


def train_config(argv: Sequence[str]):
    """The ``TrainConfig`` that ``minigpt-tui train ARGV`` asks for (not yet checked)."""
    from engine.training.config import TrainConfig

    return TrainConfig(**vars(train_parser().parse_args(list(argv))))


def _number(kind: type, allow_zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite int/float, > 0 (or >= 0 when ``allow_zero``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole number' if kind is int else 'number'}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, got {text}")
        return value

    return parse


_positive_int, _nonneg_int = _number(int, False), _number(int, True)
_positive_float, _nonneg_float = _number(float, False), _number(float, True)


TRAIN_HELP = "train a model (headless)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minigpt-tui", description="Build a small GPT and talk to it. No command: the full-screen app.")
    parser.add_argument("--checkpoint", help="open the app with this checkpoint active")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    # its flags are TrainConfig's (train_parser), read in main() once the command is known
    sub.add_parser("train", help=TRAIN_HELP, add_help=False)

    g = sub.add_parser("generate", help="stream a reply (a chat model) or a continuation of a prompt to stdout")
    g.add_argument("--checkpoint", required=True)
    g.add_argument("--prompt", required=True)
    g.add_argument("--system", help="a chat model's system prompt")
    g.add_argument("--raw", action="store_true", help="a chat model continues the prompt's text instead of replying to it")
    _sampling_args(g)

    c = sub.add_parser("chat", help="chat line by line on stdin/stdout")
    c.add_argument("--plain", action="store_true", help="plain line-by-line chat (no full-screen app)")
    c.add_argument("--checkpoint")
    c.add_argument("--system", help="the system prompt (a chat model's system turn)")
    _sampling_args(c)

    k = sub.add_parser("checkpoints", help="list and manage saved checkpoints")
    ksub = k.add_subparsers(dest="action", parser_class=_Parser)
    kl = ksub.add_parser("list")
    kl.add_argument("--json", action="store_true")
    ks = ksub.add_parser("show")
    ks.add_argument("name")
    kr = ksub.add_parser("rm")
    kr.add_argument("name")
    kn = ksub.add_parser("rename")
    kn.add_argument("old")
    kn.add_argument("new")

    e = sub.add_parser("eval", help="loss, perplexity and bits per byte of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", help="default: the checkpoint's own dataset")
    e.add_argument("--dataset-config")
    e.add_argument("--split", default=None, choices=["validation", "test"], help="default validation; a single --dataset file without --split is evaluated whole")
    e.add_argument("--word-level", action="store_true", help="the text is word-level: also report word perplexity (automatic for .tokens files)")
    e.add_argument(
        "--stride",
        type=_positive_int,
        help="sliding windows this many tokens apart: every token after the first window is predicted with at least "
        "(window - stride) tokens of context (half the window is usual; default: the window, consecutive blocks as in training)",
    )
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=_positive_int)
    p.add_argument("--temperature", type=_nonneg_float)
    p.add_argument("--top-k", type=_nonneg_int)
    p.add_argument("--top-p", type=_positive_float)
    p.add_argument("--repetition-penalty", type=_positive_float)
    p.add_argument("--seed", type=_nonneg_int)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _sampling_from(args):
    from dataclasses import replace

    from engine.store.settings import load_settings

    base = load_settings().sampling
    changes = {
        k: getattr(args, k)
        for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
        if getattr(args, k, None) is not None
    }
    return replace(base, **changes).validated()


def _err(message: str) -> None:
    print(f"minigpt-tui: {message}", file=sys.stderr, flush=True)


# --- train --------------------------------------------------------------------------------


class _Progress:
    """Prints training events: a live bar on a terminal, plain lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_line = 0.0
        self.bar_open = False

    def _line(self, text: str) -> None:
        if self.bar_open:
            self.stream.write("\r\x1b[2K")
            self.bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event) -> None:
        from engine import events as ev

        if isinstance(event, ev.TrainStep):
            eta = _fmt_s(event.eta_s) + (" left" if event.time_budget_s else "")
            text = (
                f"step {event.step}/{event.total_steps}  loss {event.loss:.4f}  lr {event.lr:.2e}  "
                f"{event.tokens_per_s:,.0f} tok/s  {event.tokens_seen:,} tokens  eta {eta}"
            )
            if self.tty:
                width = 24
                done = int(width * event.step / max(1, event.total_steps))
                self.stream.write(f"\r\x1b[2K[{'#' * done}{'.' * (width - done)}] {text}")
                self.stream.flush()
                self.bar_open = True
            elif time.monotonic() - self.last_line >= 2.0 or event.step == event.total_steps or event.step == 1:
                self.last_line = time.monotonic()
                self._line(text)
        elif isinstance(event, ev.Notice):
            self._line(f"note: {event.message}")
        elif isinstance(event, ev.TrainStarted):
            self._line(
                f"training '{event.name}': {event.preset}, {event.params / 1e6:.2f}M params, {event.tokenizer}, "
                f"on {event.dataset} ({event.train_tokens:,} train / {event.val_tokens:,} val tokens), "
                f"{event.device}/{event.dtype}, "
                + (f"time budget {_fmt_s(event.time_budget_s)}" if event.time_budget_s else f"steps {event.start_step}->{event.total_steps}")
                + (f", {event.arch}" if event.arch != "gpt2" else "")
                + (f", {event.optimizer}" if event.optimizer != "adamw" else "")
                + (f", {event.world_size} processes" if event.world_size > 1 else "")
            )
        elif isinstance(event, ev.TrainEval):
            words = f"  word perplexity {event.word_perplexity:.1f}" if event.word_perplexity is not None else ""
            chat = (
                f"  end-of-turn {event.eot_rate:.0%}  ranking top-1 {event.ranking_top1:.0%}"
                if event.eot_rate is not None and event.ranking_top1 is not None else ""
            )
            self._line(
                f"eval @ {event.step}: val loss {event.val_loss:.4f}  perplexity {event.perplexity:.1f}  "
                f"bits/byte {event.bits_per_byte:.4f}{words}{chat}"
            )
        elif isinstance(event, ev.TrainSample):
            sample = " ".join((event.prompt + event.text).split())
            self._line(f"sample @ {event.step}: {sample[:200]}")
        elif isinstance(event, ev.CheckpointSaved):
            self._line(f"saved '{event.name}' at step {event.step}")
        elif isinstance(event, ev.TrainFinished):
            bpb = f", bits/byte {event.bits_per_byte:.4f}" if event.bits_per_byte is not None else ""
            words = f", word perplexity {event.word_perplexity:.1f}" if event.word_perplexity is not None else ""
            split = (
                f" (training {_fmt_s(event.train_s)}, evaluation/sampling/saving {_fmt_s(event.overhead_s)})"
                if event.train_s is not None and event.overhead_s is not None
                else ""
            )
            self._line(f"done: '{event.name}' step {event.step} in {_fmt_s(event.elapsed_s)}{split}{bpb}{words}")
        elif isinstance(event, ev.TrainCancelled):
            state = "saved" if event.saved else "not saved"
            self._line(f"stopped at step {event.step} ({state})")
        elif isinstance(event, ev.TrainFailed):
            if self.bar_open:
                self.stream.write("\n")
                self.bar_open = False
            _err(event.error)


def _fmt_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def cmd_train(args) -> int:
    from engine.events import TrainCancelled, TrainFailed
    from engine.training.job import TrainingJob

    config = args.config
    try:
        config.check()
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    job = TrainingJob(config, _Progress())
    signalled: list[int] = []

    def on_signal(signum, _frame):
        if signalled:  # a second Ctrl+C: stop without waiting for the save
            os._exit(EXIT_INT if signum == signal.SIGINT else EXIT_TERM)
        signalled.append(signum)
        print("\nstopping: saving a checkpoint first (Ctrl+C again to quit without saving)", file=sys.stderr, flush=True)
        job.cancel(save=True)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        job.start()
        while job.thread.is_alive():
            job.thread.join(0.2)
    finally:
        if in_main:
            for s, h in old.items():
                signal.signal(s, h)
    result = job.result
    if isinstance(result, TrainFailed):
        return result.exit_code
    if isinstance(result, TrainCancelled) or signalled:
        return EXIT_TERM if signalled and signalled[0] == signal.SIGTERM else EXIT_INT
    return EXIT_OK


# --- generate / chat ----------------------------------------------------------------------


def _stream_reply(chat, prompt, sampling, out) -> tuple[str, object]:
    from engine.events import GenerationFailed, GenerationFinished, TokenGenerated

    stop = threading.Event()
    finished = None
    try:
        for event in chat.stream(prompt, sampling, stop):
            if isinstance(event, TokenGenerated):
                out.write(event.text)
                out.flush()
            elif isinstance(event, GenerationFinished):
                finished = event
            elif isinstance(event, GenerationFailed):
                raise EngineError(event.error)
    except KeyboardInterrupt:
        stop.set()
    return (finished.text if finished else ""), finished


def cmd_generate(args) -> int:
    from engine.generation.chat_model import ChatModel

    sampling = _sampling_from(args)
    chat = ChatModel.from_checkpoint(args.checkpoint, device=args.device)
    chat.warm_up()  # the fast decode path's self-check: a few ms, no compilation
    prompt = args.prompt
    if chat.is_chat and not args.raw:  # a chat model replies to the prompt as a user turn, and ends its turn
        prompt, _ = chat.fit_chat(_system(args) + [{"role": "user", "content": args.prompt}], sampling.max_new_tokens)
    _, finished = _stream_reply(chat, prompt, sampling, sys.stdout)
    sys.stdout.write("\n")
    if finished and os.environ.get("MINIGPT_STATS"):
        _err(f"{finished.new_tokens} tokens, {finished.tokens_per_s or 0:.1f} tok/s, first token {1000 * (finished.time_to_first_token_s or 0):.0f} ms"
             f", decode: {chat.decode_note}")
    return EXIT_OK


def _system(args) -> list[dict]:
    """The system turn that --system asks for (none when empty)."""
    return [{"role": "system", "content": args.system}] if getattr(args, "system", None) else []


def cmd_chat(args) -> int:
    from engine.store.checkpoints import CheckpointStore
    from engine.generation.chat_model import ChatModel
    from engine.store.settings import load_settings

    name = args.checkpoint or load_settings().active_checkpoint
    if not name:
        good = [c.name for c in CheckpointStore().list() if c.ok]
        if not good:
            raise UsageError("no checkpoint yet: train one with 'minigpt-tui train --dataset builtin --preset tiny --max-steps 30'")
        name = good[-1]
    sampling = _sampling_from(args)
    chat = ChatModel.from_checkpoint(name, device=args.device)
    chat.warm_up()
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with '{name}' (empty line or Ctrl+D to quit)", file=sys.stderr)
    history: list[dict] = _system(args)
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            if interactive:
                break
            continue
        history.append({"role": "user", "content": text})
        reply, _ = _stream_reply(chat, chat.fit_chat(history, sampling.max_new_tokens)[0], sampling, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": reply})
    return EXIT_OK


# --- checkpoints / eval ------------------------------------------------------------------


def cmd_checkpoints(args) -> int:
    from engine.store.checkpoints import CheckpointStore

    store = CheckpointStore()
    action = args.action or "list"
    if action == "list":
        infos = store.list()
        if getattr(args, "json", False):
            print(json.dumps([_info_dict(i) for i in infos], indent=2))
            return EXIT_OK
        if not infos:
            print(f"no checkpoints in {store.root}")
            return EXIT_OK
        print(f"{'name':<28} {'preset':<7} {'params':>8} {'steps':>7} {'val loss':>8} {'bpb':>6}  dataset")
        for i in infos:
            if not i.ok:
                print(f"{i.name:<28} BROKEN: {i.broken}")
                continue
            m = i.record
            print(
                f"{i.name:<28} {m.preset or '?':<7} {_fmt_params(m.params):>8} {m.steps:>7} "
                f"{_fmt_num(m.val_loss, 4):>8} {_fmt_num(m.bits_per_byte, 3):>6}  {m.dataset or ''}"
            )
        return EXIT_OK
    if action == "show":
        info = store.get(args.name)
        print(json.dumps(_info_dict(info), indent=2))
        return EXIT_OK
    if action == "rm":
        store.delete(args.name)
        print(f"deleted '{args.name}'")
        return EXIT_OK
    if action == "rename":
        store.rename(args.old, args.new)
        print(f"renamed '{args.old}' to '{args.new}'")
        return EXIT_OK
    return EXIT_USAGE


def _info_dict(info) -> dict:
    return {"name": info.name, "path": str(info.path), "ok": info.ok, "broken": info.broken, "size_bytes": info.size_bytes, **({"meta": info.meta} if info.meta else {})}


def _fmt_params(n) -> str:
    return "?" if not n else f"{n / 1e6:.1f}M"


def _fmt_num(x, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_eval(args) -> int:
    from engine.data import sources as data_mod
    from engine.store.checkpoints import CheckpointStore
    from engine.evaluation.perplexity import evaluate
    from engine.model import pick_device
    from engine.data.tokenizer import token_byte_lengths

    store = CheckpointStore()
    device, dtype = pick_device(args.device)
    model, tokenizer, info = store.load(args.checkpoint, device)
    from pathlib import Path

    from engine.evaluation.words import word_table

    record = info.record
    spec = args.dataset or record.dataset_spec
    config = args.dataset_config if args.dataset else record.dataset_config
    source = data_mod.resolve(spec, config, lambda m: _err(f"note: {m}"), record.assistant or "both")
    if args.word_level or (not args.dataset and record.word_level):
        source.word_level = True
    block = record.block_size or 128
    # a single file given with --dataset is evaluated whole (no split is held out of it)
    whole_file = bool(args.dataset) and args.split is None and data_mod.looks_like_path(spec) and Path(spec).expanduser().is_file()
    args.split = args.split or "validation"
    packed = data_mod.pack(source, tokenizer, block, lambda m: _err(f"note: {m}"), hold_out=not whole_file)
    split = "train" if whole_file else args.split
    if split not in packed.splits:
        raise UsageError(f"dataset {source.name} has no {args.split} split")
    stride = args.stride or block
    try:
        blocks = packed.blocks(split, stride=stride)
    except ValueError:  # the only thing BlockDataset checks: 0 < stride <= block (argparse: > 0)
        raise UsageError(f"--stride {stride} is longer than the checkpoint's window ({block} tokens)") from None
    words = word_table(tokenizer) if source.word_level else None
    result = evaluate(model, blocks, token_byte_lengths(tokenizer), device, dtype, word_table=words)
    if result is None:
        raise UsageError(f"the {args.split} split of {source.name} is empty")
    report = {
        "checkpoint": args.checkpoint,
        "dataset": source.name,
        "split": "whole file" if whole_file else args.split,
        "window": block,
        "stride": stride,
        "loss": round(result.loss, 5),
        "perplexity": round(result.perplexity, 3),
        "bits_per_byte": round(result.bits_per_byte, 5),
        "tokens": result.tokens,
        "bytes": result.bytes,
    }
    if result.word_perplexity is not None:
        report.update(word_perplexity=round(result.word_perplexity, 3), words=result.words)
    if source.chat and getattr(tokenizer, "chat_template", None):
        from engine.evaluation.chat_scores import chat_scores
        from engine.generation.chat_model import ChatModel

        chat = ChatModel(model=model, tokenizer=tokenizer, name=args.checkpoint, device=device, dtype=dtype)
        chat.warm_up()
        held = source.splits[split]
        conversations = list(held.select(range(min(len(held), EVAL_CHAT_CONVERSATIONS)))["messages"])
        scores = chat_scores(chat, conversations, len(conversations), len(conversations))
        report.update(
            eot_rate=None if scores.eot_rate is None else round(scores.eot_rate, 4), eot_replies=scores.eot_replies,
            reply_tokens=None if scores.reply_tokens is None else round(scores.reply_tokens, 1),
            ranking_top1=None if scores.ranking_top1 is None else round(scores.ranking_top1, 4), ranking_items=scores.ranking_items,
        )
    print(json.dumps(report))
    return EXIT_OK


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "chat": cmd_chat, "checkpoints": cmd_checkpoints, "eval": cmd_eval}


def main(argv: Sequence[str] | None = None, launch_app: Callable[..., int] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        args.config = train_config(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.version:
        from engine import __version__

        print(f"minigpt-tui {__version__}")
        return EXIT_OK
    if args.command == "chat" and not args.plain:
        args.command = None  # the full-screen app is the chat
    if args.command is None:
        if launch_app is None:
            parser.error("the full-screen app is not available here; use a command (see --help)")
        return launch_app(checkpoint=args.checkpoint)
    try:
        return COMMANDS[args.command](args)
    except EngineError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INT
    except BrokenPipeError:
        return EXIT_OK
