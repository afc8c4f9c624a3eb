"""Pieces of the benchmark that decide what its figures mean (fast; the full run is in
test_bench_quick.py)."""

from __future__ import annotations

import json

import numpy as np

from bench.readme_table import markdown
from bench.run import cpu_isa, machine_line, same_text_blocks
from conftest import ROOT


def test_isa_flags_from_cpuinfo():
    epyc = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    sapphire = "flags\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_isa(epyc) == {"AVX2": True, "AVX-512": False, "AVX512-BF16": False, "AMX-BF16": False, "AMX": False}
    assert all(cpu_isa(sapphire).values())
    line = machine_line({"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0", "isa": cpu_isa(epyc), "precision": {"engine_cpu": "fp32"}})
    assert line == "AMD EPYC, 2 cores, AVX2 (no AVX-512/AVX512-BF16/AMX), engine in fp32, torch 2.13.0"


def test_same_text_blocks_score_the_same_bytes(fresh_dirs):
    """Time to quality compares both models on one text: the baseline's blocks hold exactly the
    bytes of the engine's first blocks."""
    from engine.data.sources import builtin_source
    from engine.data.tokenizer import load_gpt2, token_byte_lengths, train_bpe

    source = builtin_source()
    gpt2 = load_gpt2()
    bpe = train_bpe(lambda: (t for batch in source.iter_text("validation") for t in batch), 400, "test-same-text")
    docs = ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void; ünïcode ✓"]
    ids = []
    for i, d in enumerate(docs):
        if i:
            ids.append(bpe.eos_token_id)
        ids += bpe(d, add_special_tokens=False)["input_ids"]
    blocks = same_text_blocks(np.asarray(ids), bpe, gpt2, 8)
    src_bytes = sum(token_byte_lengths(bpe)[t] for t in ids)
    dst = [int(t) for t in blocks.stream]
    assert sum(token_byte_lengths(gpt2)[t] for t in dst) == src_bytes == sum(len(d.encode()) for d in docs)
    assert gpt2.decode(dst) == docs[0] + gpt2.eos_token + docs[1]


def test_readme_table_headline_is_bytes_per_second():
    report = json.loads((ROOT / "bench" / "results" / "2026-11-25-cpu-run2.json").read_text())
    table = markdown(report)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| **useful training bytes of text/s**") and "**9.8x**" in rows[1] and ">= 10x" in rows[1]
    assert rows[2].startswith("| useful training tokens/s") and "10.7x" in rows[2]
    assert "CPU figures: AMD EPYC, 2 cores" in table and "no GPU" in table
    assert "an old report" in table  # a report without the same-text and product-settings keys says so
