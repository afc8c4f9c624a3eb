"""The benchmark: baseline (the tutorial recipe) vs the engine, alternating, one invocation."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import baseline
from . import engine_side
from engine.model import PRESETS

# Sampling shared by both generation sides.
GEN = dict(temperature=0.8, top_k=40)
# Curve evaluations during the engine's budget run: the first CURVE_BLOCKS validation blocks.
CURVE_BLOCKS = 16
TARGETS = {
    "useful_bytes_ratio": 10.0,
    "engine_seconds_to_baseline_bpb": 60.0,
    "gen_tokens_ratio": 2.0,
    "engine_ttft_ms": 50.0,
    "first_frame_ms": 500.0,
    "first_token_ms": 150.0,
    "train_peak_rss_mb": 1536.0,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _median(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def machine() -> dict:
    import torch
    import transformers

    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    from engine.model import pick_device

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "isa": cpu_isa(),
        "precision": {"engine_cpu": pick_device("cpu")[1], "baseline": "fp32"},
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m_at_start": load,
    }


ISA_FLAGS = {  # /proc/cpuinfo flag -> name: what decides fp32 vs bf16 speed on a CPU
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
    "amx_tile": "AMX",
}


def cpu_isa(cpuinfo: str | None = None) -> dict:
    """{name: present} for the instruction sets that matter here (from /proc/cpuinfo's flags)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: flag in flags for flag, name in ISA_FLAGS.items()}


def same_text_blocks(stream, src_tok, dst_tok, block: int):
    """The text of ``stream`` (token ids of ``src_tok``) re-tokenized with ``dst_tok`` and packed
    the same way (documents joined by end-of-text): both models are then scored on the same bytes."""
    import numpy as np

    from engine.data.sources import BlockDataset

    eos_src, eos_dst = src_tok.eos_token_id, dst_tok.eos_token_id
    docs, cur = [], []
    for t in (int(x) for x in stream):
        if t == eos_src:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    docs.append(cur)
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if i:
            ids.append(eos_dst)
        if doc:
            ids.extend(dst_tok(src_tok.decode(doc), add_special_tokens=False)["input_ids"])
    return BlockDataset(np.asarray(ids, dtype=np.int64), block, None)


def _subset(src: Path, dst: Path, train_lines: int, valid_lines: int) -> Path:
    """The first lines of each split: a small copy for --quick."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        low = f.name.lower()
        n = train_lines if "train" in low else valid_lines if ("valid" in low or "val" in low) else 0
        if n and f.suffix in (".tokens", ".raw", ".txt"):
            with f.open(encoding="utf-8") as r, (dst / f.name).open("w", encoding="utf-8") as w:
                for i, line in enumerate(r):
                    if i >= n:
                        break
                    w.write(line)
    return dst


def _steady(step_ends: list[float], skip: int = 2, drop_last: int = 0):
    """Median seconds per step from consecutive step-end times, without the first `skip`
    intervals (warm-up).  The median shrugs off steps slowed by other processes on the machine."""
    ends = step_ends[: len(step_ends) - drop_last] if drop_last else step_ends
    if len(ends) < skip + 2:
        return None, 0, 0
    a, b = skip, len(ends) - 1
    return statistics.median(y - x for x, y in zip(ends[a:b], ends[a + 1 : b + 1])), a, b


@contextlib.contextmanager
def _env(tmp: Path):
    """Offline, checkpoints in a temp store (the user's are untouched); the cache stays shared."""
    keys = {
        "MINIGPT_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(data: str, budget_min: float = 10.0, quick: bool = False, rounds: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="minigpt-bench-") as tmpdir, _env(Path(tmpdir)):
        return _run(Path(tmpdir), Path(data).expanduser(), budget_min, quick, rounds)


def _run(tmp: Path, data: Path, budget_min: float, quick: bool, rounds: int | None) -> dict:
    import torch

    from engine.data import sources as data_mod
    from engine.data import tokenizer as tok_mod
    from engine.evaluation.perplexity import evaluate
    from engine.generation.chat_model import ChatModel

    if not data.is_dir():
        raise SystemExit(f"bench: data folder not found: {data}")
    report: dict = {"machine": machine(), "quick": quick, "data": str(data)}
    if quick:
        data = _subset(data, tmp / "subset", train_lines=4000, valid_lines=300)
    budget_s = budget_min * 60.0
    rounds = rounds or (1 if quick else 3)
    k_steps = 6 if quick else 14
    report["settings"] = {
        "budget_s": budget_s,
        "throughput_rounds": rounds,
        "throughput_steps": k_steps,
        "engine_tokenizer": engine_side.TOKENIZER,
        "baseline": "GPT-2 tokenizer, lines padded to 128, batch 8, Trainer defaults (fp32, lr 5e-5, dropout 0.1)",
        "engine": f"seed preset (batch {PRESETS['seed'].batch_size}, lr {PRESETS['seed'].lr:g}), packed blocks of 128, "
        f"tokenizer {engine_side.TOKENIZER}, dtype auto: the product's defaults",
    }

    # --- preparation (one-time costs, reported, not in any rate) ---
    t = time.perf_counter()
    source = data_mod.resolve(str(data))
    btok = baseline.tokenizer()
    btrain = baseline.tokenize_lines(source, btok, "train")
    report["prep"] = {"baseline_tokenize_s": time.perf_counter() - t}
    log(f"baseline data: {len(btrain)} padded lines ({report['prep']['baseline_tokenize_s']:.1f}s)")

    # --- 1. training throughput, alternating rounds ---
    b_rates, b_useful, e_rates = [], [], []
    useful_fraction = None
    for r in range(rounds):
        log(f"throughput round {r + 1}/{rounds}: baseline {k_steps} steps")
        _, st = baseline.train(btrain, str(tmp / f"b-tp{r}"), max_steps=k_steps)
        per, a, b = _steady(st["step_ends"])
        if per:
            useful = sum(st["useful"][a + 1 : b + 1]) / (b - a)
            total = sum(st["total"][a + 1 : b + 1]) / (b - a)
            b_rates.append(total / per)
            b_useful.append(useful / per)
            useful_fraction = sum(st["useful"]) / max(1, sum(st["total"]))
        log(f"throughput round {r + 1}/{rounds}: engine {k_steps} steps")
        res, rec, times = engine_side.train(str(data), f"tp{r}", max_steps=k_steps, eval_every=k_steps, eval_blocks=2)
        if r == 0:
            report["prep"]["engine_first_prep_s"] = times["prep_s"]  # BPE training + packing when not cached
        per_e, _, _ = _steady(rec.step_ends, drop_last=1)
        if per_e and rec.started:
            e_rates.append(rec.started.tokens_per_step / per_e)
        log(f"  baseline {b_useful[-1] if b_useful else float('nan'):.0f} useful tok/s, engine {e_rates[-1] if e_rates else float('nan'):.0f} tok/s")
    e_step_tps = _median(e_rates)
    train = {
        "useful_tokens_per_s": {"baseline": _median(b_useful), "engine": e_step_tps},  # packed: every engine token is text
        "step_tokens_per_s": {"baseline": _median(b_rates), "engine": e_step_tps},
        "baseline_useful_fraction": useful_fraction,
        "rounds": {"baseline_useful": b_useful, "engine": e_rates},
    }
    train["useful_tokens_ratio"] = _ratio(train["useful_tokens_per_s"]["engine"], train["useful_tokens_per_s"]["baseline"])
    report["train"] = train

    # --- 2. time to quality: same wall budget, one shared evaluator ---
    log(f"quality: baseline trains {budget_s:.0f}s")
    bmodel, bst = baseline.train(btrain, str(tmp / "b-q"), budget_s=budget_s)
    engine_tokens_per_step = rec.started.tokens_per_step if rec.started else 16 * 128
    step_s = engine_tokens_per_step / e_step_tps if e_step_tps else 0.5
    planned = max(20, int(budget_s / step_s * 1.1))
    eval_every = max(5, int(round((2.0 if quick else 4.0) / step_s)))
    log(f"quality: engine trains {budget_s:.0f}s (planned {planned} steps, eval every {eval_every})")
    eres, erec, etimes = engine_side.train(str(data), "quality", max_steps=planned, eval_every=eval_every,
                                           eval_blocks=CURVE_BLOCKS, budget_s=budget_s)
    from engine.store.checkpoints import CheckpointStore

    emodel, etok, _ = CheckpointStore().load("quality", "cpu")
    log("quality: shared evaluation on the full validation split")
    b_blocks = data_mod.pack(source, btok, 128).blocks("validation")
    e_blocks = data_mod.pack(source, etok, 128).blocks("validation")
    # fp32, 8 blocks a batch (GPT-2's 50,257 logits for 64 blocks would take 1.6 GB)
    b_eval = evaluate(bmodel, b_blocks, tok_mod.token_byte_lengths(btok), "cpu", "fp32", batch_size=8)
    e_eval = evaluate(emodel, e_blocks, tok_mod.token_byte_lengths(etok), "cpu", "fp32", batch_size=8)
    b_bpb, e_bpb = b_eval.bits_per_byte, e_eval.bits_per_byte
    # Time to quality on one set of text: the engine's curve scores its first CURVE_BLOCKS
    # validation blocks; the baseline is scored on exactly that text, re-tokenized with GPT-2's
    # tokenizer (a full-split number would compare different text).
    b_curve_blocks = same_text_blocks(e_blocks.stream[: CURVE_BLOCKS * 128], etok, btok, 128)
    b_curve = evaluate(bmodel, b_curve_blocks, tok_mod.token_byte_lengths(btok), "cpu", "fp32", batch_size=8)
    e_curve_final = evaluate(emodel, data_mod.pack(source, etok, 128).blocks("validation", limit=CURVE_BLOCKS),
                             tok_mod.token_byte_lengths(etok), "cpu", "fp32", batch_size=8)
    b_curve_bpb = b_curve.bits_per_byte
    reach = next((ev["t_s"] for ev in erec.evals if ev["bpb"] is not None and ev["bpb"] <= b_curve_bpb), None)
    # cross-check: whole-run rates of the budget runs (the engine's includes its evals and samples)
    train["budget_run_useful_tokens_per_s"] = {
        "baseline": sum(bst["useful"]) / bst["train_s"] if bst["train_s"] else None,
        "engine": len(erec.step_ends) * engine_tokens_per_step / etimes["train_s"] if etimes["train_s"] else None,
    }
    report["quality"] = {
        "baseline_bpb": b_bpb,
        "engine_bpb": e_bpb,
        "engine_seconds_to_baseline_bpb": reach,
        "baseline_val_loss": b_eval.loss,
        "engine_val_loss": e_eval.loss,
        "baseline_steps": bst["steps"],
        "engine_steps": len(erec.step_ends),
        "baseline_train_s": bst["train_s"],
        "engine_train_s": etimes["train_s"],
        "val_bytes": e_eval.bytes,
        "baseline_val_tokens": b_eval.tokens,
        "engine_val_tokens": e_eval.tokens,
        "engine_curve": erec.evals,
        "curve_set": {
            "blocks": CURVE_BLOCKS,
            "bytes": {"baseline": b_curve.bytes, "engine": e_curve_final.bytes},
            "baseline_bpb": b_curve_bpb,
            "engine_final_bpb": e_curve_final.bits_per_byte,
        },
        "note": f"curve: bpb on the first {CURVE_BLOCKS} validation blocks of the engine at each eval (t_s from train "
        "begin, evals included); engine_seconds_to_baseline_bpb: first curve point <= the baseline's final bpb on the "
        "same text (curve_set); baseline_bpb/engine_bpb: the full validation split through engine/evaluation/perplexity.py",
    }
    # bytes per token make the token rates comparable across tokenizers
    b_bpt = b_eval.bytes / max(1, b_eval.tokens)
    e_bpt = e_eval.bytes / max(1, e_eval.tokens)
    train["useful_bytes_per_s"] = {
        "baseline": train["useful_tokens_per_s"]["baseline"] * b_bpt if train["useful_tokens_per_s"]["baseline"] else None,
        "engine": e_step_tps * e_bpt if e_step_tps else None,
    }
    train["useful_bytes_ratio"] = _ratio(train["useful_bytes_per_s"]["engine"], train["useful_bytes_per_s"]["baseline"])
    train["bytes_per_token"] = {"baseline": b_bpt, "engine": e_bpt}
    log(f"quality: baseline bpb {b_bpb:.3f}, engine bpb {e_bpb:.3f}, engine reached baseline at {reach}")

    # --- 3. generation: one checkpoint for both sides, same sampling ---
    # The tutorial's model shape (GPT-2 vocabulary, 1024 positions: room for 200 + 256 tokens).
    # Freshly initialised rather than the baseline's trained weights: trained on padding, those
    # answer EOS within a token or two, and decode speed does not depend on the weights.
    torch.manual_seed(0)
    gmodel = baseline.build_model().eval()
    chat = ChatModel(model=gmodel, tokenizer=btok, name="gen", device="cpu", dtype="fp32")
    chat.warm_up()  # as the app does after a load: "auto" then takes the fast path
    gref = ChatModel(model=gmodel, tokenizer=btok, name="gen", device="cpu", dtype="fp32", decode="reference")
    prompt = [int(x) for x in data_mod.pack(source, btok, 128).splits["validation"][:200]]
    reps = 1 if quick else 3
    gb, ge, gr = [], [], []
    baseline.stream_generate(gmodel, btok, prompt, max_new_tokens=8, seed=0, **GEN)  # warm-up
    engine_side.stream(chat, prompt, max_new_tokens=8, seed=0, **GEN)
    engine_side.stream(gref, prompt, max_new_tokens=8, seed=0, **GEN)
    for i in range(reps):
        log(f"generation rep {i + 1}/{reps}")
        gb.append(baseline.stream_generate(gmodel, btok, prompt, max_new_tokens=256, seed=i, **GEN))
        ge.append(engine_side.stream(chat, prompt, max_new_tokens=256, seed=i, **GEN))
        gr.append(engine_side.stream(gref, prompt, max_new_tokens=256, seed=i, **GEN))
    med = lambda rows, k: _median([r[k] for r in rows])  # noqa: E731
    gen = {
        "baseline_tokens_per_s": med(gb, "tokens_per_s"),
        "engine_tokens_per_s": med(ge, "tokens_per_s"),
        "baseline_ttft_ms": med(gb, "ttft_s") * 1000 if med(gb, "ttft_s") is not None else None,
        "engine_ttft_ms": med(ge, "ttft_s") * 1000 if med(ge, "ttft_s") is not None else None,
        "prompt_tokens": len(prompt),
        "new_tokens": {"baseline": [r["new_tokens"] for r in gb], "engine": [r["new_tokens"] for r in ge]},
        "checkpoint": "GPT2Config(n_embd=128, n_layer=6, n_head=8), fresh init (seed 0), GPT-2 vocab, fp32 weights",
        "engine_path": "GenerationJob (worker thread) + ChatModel.stream; baseline: generate() on a thread + TextIteratorStreamer",
        "sampling": dict(GEN, top_p=1.0, repetition_penalty=1.0, max_new_tokens=256),
    }
    gen["tokens_ratio"] = _ratio(gen["engine_tokens_per_s"], gen["baseline_tokens_per_s"])
    gen["decode_path"] = chat.decode_path
    gen["reference_tokens_per_s"] = med(gr, "tokens_per_s")
    report["generation"] = gen
    del chat, gref

    # --- 3b. decode speed on the engine's own checkpoint (seed preset, the default tokenizer) ---
    from .decode import measure_decode

    log("generation: decode paths on the engine's checkpoint")
    try:
        gen["decode"] = measure_decode("quality", [int(x) for x in e_blocks[0]["input_ids"]], reps=2 if quick else 5)
        gen["decode_path"] = gen["decode"]["decode_path"]
    except Exception as exc:  # the rest of the report still stands
        gen["decode"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}

    # --- 4. app latency (another module; optional) ---
    report["app"] = {"first_frame_ms": None, "first_token_ms": None}
    try:
        from .app_latency import measure_app  # type: ignore
    except ImportError:
        report["app"]["note"] = "bench/app_latency.py not present"
    else:
        log("app latency")
        try:
            report["app"].update(measure_app("quality"))
        except Exception as exc:  # the rest of the report still stands
            report["app"]["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    # --- 5. peak RSS, each in a fresh process ---
    from .rss import measure

    steps = 3 if quick else 8
    log("memory: peak RSS of training and chatting (subprocesses)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    from engine.training.config import TrainConfig

    product = TrainConfig()
    report["memory"] = {
        "train_peak_rss_mb": measure(["train", str(data), str(steps), engine_side.TOKENIZER], env),
        "chat_peak_rss_mb": measure(["chat", "quality", "256"], env),
        "eval_blocks": product.eval_blocks,
        "sample_tokens": product.sample_tokens,
        "note": f"seed preset, tokenizer {engine_side.TOKENIZER}, batch {PRESETS['seed'].batch_size} x 128, {steps} steps and an evaluation of "
        f"{product.eval_blocks} validation blocks plus a {product.sample_tokens}-token sample (the product's settings), "
        "fresh process",
    }
    if not quick:  # the same with GPT-2's vocabulary, for reference
        report["memory"]["train_peak_rss_mb_gpt2_vocab"] = measure(["train", str(data), str(steps), "gpt2"], env)

    # --- 6. GPU ---
    report["gpu"] = gpu_section(str(data), quick) if torch.cuda.is_available() else None
    report["targets"] = check_targets(report)
    return report


def gpu_section(data: str, quick: bool) -> dict:
    """Training tokens/s and MFU of the ``seed`` and ``gpt2`` presets on CUDA through the path users
    run: ``TrainingJob`` (Trainer, packed data, the precision ``pick_device`` chooses)."""
    import torch

    from engine.model import cuda_dtype, get_preset

    name = torch.cuda.get_device_name(0)
    peaks = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}
    peak = next((v for k, v in peaks.items() if k in name), None)
    dtype = cuda_dtype(torch.cuda.get_device_capability(0))
    out = {"device": name, "peak_bf16_flops": peak, "dtype": dtype, "path": "TrainingJob (transformers Trainer)"}
    n = 8 if quick else 30
    for preset_name, tokenizer in (("seed", engine_side.TOKENIZER), ("gpt2", "gpt2")):
        p = get_preset(preset_name)
        log(f"gpu: {preset_name} preset, {n} steps through TrainingJob")
        res, rec, _ = engine_side.train(data, f"gpu-{preset_name}", max_steps=n, eval_every=n, eval_blocks=8,
                                        tokenizer=tokenizer, preset=preset_name, device="cuda")
        per, _, _ = _steady(rec.step_ends, drop_last=1)
        tps = rec.started.tokens_per_step / per if per and rec.started else None
        params = rec.started.params if rec.started else None
        flops_per_token = 6 * params + 12 * p.n_layer * p.n_embd * p.block_size if params else None
        out[preset_name] = {
            "tokens_per_s": tps,
            "batch": p.batch_size,
            "block": p.block_size,
            "tokenizer": tokenizer,
            "result": type(res).__name__,
            "mfu": tps * flops_per_token / peak if tps and peak and flops_per_token else None,
        }
        torch.cuda.empty_cache()
    from .decode import measure_gpu_decode

    try:  # the fast decode path on CUDA in bf16 (gpt2 preset)
        out["decode"] = measure_gpu_decode(quick)
    except Exception as exc:
        out["decode"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return out


def check_targets(r: dict) -> dict:
    def le(v, t):
        return None if v is None else v <= t

    def ge(v, t):
        return None if v is None else v >= t

    dec = r["generation"].get("decode") or {}
    app = r.get("app") or {}
    gpu_dec = (r.get("gpu") or {}).get("decode") or {}
    return {
        "decode_tokens_per_s>=1000": ge(dec.get("engine_tokens_per_s"), 1000.0),
        "decode_ratio_vs_streamer>=6": ge(dec.get("ratio_vs_streamer"), 6.0),
        "decode_ttft_ms_32<=10": le(dec.get("ttft_ms_32"), 10.0),
        "small_tokens_per_s>=400": ge(dec.get("small_tokens_per_s"), 400.0),
        "app_onscreen_ratio>=0.8": ge(app.get("onscreen_ratio"), 0.8),
        "app_markdown_onscreen_ratio>=0.9": ge(app.get("markdown_onscreen_ratio"), 0.9),
        "gpu_gpt2_bf16_tokens_per_s>=500": ge(gpu_dec.get("gpt2_tokens_per_s"), 500.0) if r.get("gpu") else None,
        "useful_bytes_ratio>=10": ge(r["train"].get("useful_bytes_ratio"), TARGETS["useful_bytes_ratio"]),
        "engine_seconds_to_baseline_bpb<=60": le(r["quality"].get("engine_seconds_to_baseline_bpb"), 60.0),
        "gen_tokens_ratio>=2": ge(r["generation"].get("tokens_ratio"), 2.0),
        "engine_ttft_ms<=50": le(r["generation"].get("engine_ttft_ms"), 50.0),
        "first_frame_ms<=500": le(r["app"].get("first_frame_ms"), 500.0),
        "first_token_ms<=150": le(r["app"].get("first_token_ms"), 150.0),
        "train_peak_rss_mb<=1536": le(r["memory"].get("train_peak_rss_mb"), 1536.0),
    }


def machine_line(ma: dict) -> str:
    """'AMD EPYC, 2 cores, AVX2 (no AVX-512/AVX512-BF16/AMX), fp32, torch 2.13.0+cpu'."""
    isa = ma.get("isa")
    if isa:
        have = [k for k, v in isa.items() if v]
        lack = [k for k, v in isa.items() if not v and k != "AMX-BF16"]
        isa_text = (", ".join(have) or "no AVX2") + (f" (no {'/'.join(lack)})" if lack else "")
    else:
        isa_text = "instruction sets not recorded"
    precision = (ma.get("precision") or {}).get("engine_cpu")
    return f"{ma['cpu']}, {ma['cores']} cores, {isa_text}" + (f", engine in {precision}" if precision else "") + f", torch {ma['torch']}"


def table(r: dict) -> str:
    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    t, q, g, a, m = r["train"], r["quality"], r["generation"], r["app"], r["memory"]
    d = g.get("decode") or {}
    rows = [
        ("train useful bytes/s", f((t.get("useful_bytes_per_s") or {}).get("baseline"), "{:.0f}"),
         f((t.get("useful_bytes_per_s") or {}).get("engine"), "{:.0f}"), f(t.get("useful_bytes_ratio"), "{:.1f}x"), ">= 10x"),
        ("train useful tokens/s", f(t["useful_tokens_per_s"]["baseline"]), f(t["useful_tokens_per_s"]["engine"]),
         f(t.get("useful_tokens_ratio"), "{:.1f}x"), ""),
        ("train step tokens/s", f(t["step_tokens_per_s"]["baseline"]), f(t["step_tokens_per_s"]["engine"]),
         f(_ratio(t["step_tokens_per_s"]["engine"], t["step_tokens_per_s"]["baseline"]), "{:.1f}x"), ""),
        ("val bits/byte at budget", f(q["baseline_bpb"], "{:.3f}"), f(q["engine_bpb"], "{:.3f}"), "", "lower is better"),
        ("s to baseline's bpb (same text)", "", f(q["engine_seconds_to_baseline_bpb"]), "", "<= 60"),
        ("gen steady tokens/s", f(g["baseline_tokens_per_s"]), f(g["engine_tokens_per_s"]), f(g.get("tokens_ratio"), "{:.1f}x"), ">= 2x"),
        ("gen TTFT ms (200-tok prompt)", f(g["baseline_ttft_ms"]), f(g["engine_ttft_ms"]), "", "<= 50"),
        (f"decode tok/s seed {engine_side.TOKENIZER} (" + str(d.get("decode_path", "-")) + ")", f(d.get("generate_streamer_tokens_per_s")),
         f(d.get("engine_tokens_per_s")), f(d.get("ratio_vs_streamer"), "{:.1f}x"), ">= 1000, >= 6x"),
        ("decode tok/s reference path", "", f(d.get("reference_tokens_per_s")), f(d.get("ratio_vs_reference"), "{:.1f}x"), ""),
        ("decode TTFT ms (32-tok prompt)", "", f(d.get("ttft_ms_32")), "", "<= 10"),
        ("decode tok/s small preset", "", f(d.get("small_tokens_per_s")), "", ">= 400"),
        ("app on-screen vs headless tok/s", f(a.get("headless_tokens_per_s")), f(a.get("onscreen_tokens_per_s")),
         f(a.get("onscreen_ratio"), "{:.2f}"), ">= 0.80"),
        ("app Markdown vs raw text tok/s", f(a.get("onscreen_plain_tokens_per_s")), f(a.get("onscreen_markdown_tokens_per_s")),
         f(a.get("markdown_onscreen_ratio"), "{:.2f}"), ">= 0.90"),
        ("app first frame ms", "", f(a.get("first_frame_ms")), "", "<= 500"),
        ("app first token ms", "", f(a.get("first_token_ms")), "", "<= 150"),
        ("train peak RSS MB", "", f(m.get("train_peak_rss_mb"), "{:.0f}"), "", "<= 1536"),
        ("chat peak RSS MB", "", f(m.get("chat_peak_rss_mb"), "{:.0f}"), "", ""),
    ]
    head = ("metric", "baseline", "engine", "ratio", "target")
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(5)]
    line = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths))  # noqa: E731
    out = [line(head), line(tuple("-" * w for w in widths))] + [line(row) for row in rows]
    ma = r["machine"]
    out.append(f"machine: {machine_line(ma)}, {ma['date']}; gpu: " + ("none" if r.get("gpu") is None else r["gpu"]["device"]))
    return "\n".join(out)
