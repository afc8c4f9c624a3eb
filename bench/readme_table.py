"""The README's performance table from a bench report: ``python -m bench.readme_table REPORT.json``.

Bytes of text per second is the headline training rate (the two sides use different tokenizers,
so their tokens are not the same amount of text); tokens/s stands beside it.
"""

from __future__ import annotations

import json
import sys

from .run import machine_line


def _n(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v)


def _x(v):
    return "" if v is None else f"{v:.1f}x"


def markdown(r: dict) -> str:
    t, q, g, a, m = r["train"], r["quality"], r["generation"], r.get("app") or {}, r["memory"]
    budget_min = r["settings"]["budget_s"] / 60
    ub, ut, st = t.get("useful_bytes_per_s") or {}, t["useful_tokens_per_s"], t["step_tokens_per_s"]
    reach = q.get("engine_seconds_to_baseline_bpb")
    step_ratio = st["engine"] / st["baseline"] if st.get("engine") and st.get("baseline") else None
    rows = [
        ("**useful training bytes of text/s**, `seed` shape", _n(ub.get("baseline")), _n(ub.get("engine")),
         f"**{_x(t.get('useful_bytes_ratio'))}**", ">= 10x"),
        ("useful training tokens/s (different tokenizers)", _n(ut["baseline"]), _n(ut["engine"]), _x(t.get("useful_tokens_ratio")), ""),
        ("raw step tokens/s", _n(st["baseline"]), _n(st["engine"]), _x(step_ratio), ""),
        (f"validation bits/byte after {budget_min:g} min (full split)", _n(q["baseline_bpb"], "{:.3f}"), _n(q["engine_bpb"], "{:.3f}"), "", ""),
        (f"seconds to the baseline's {budget_min:g}-minute bits/byte "
         + ("(same text)" if "curve_set" in q else "(engine on 16 blocks vs baseline on the full split: an old report)"), _n(r["settings"]["budget_s"]), _n(reach, "{:.1f}"),
         _x(r["settings"]["budget_s"] / reach) if reach else "", "<= 60 s"),
        ("generation, steady tokens/s (256-token reply)", _n(g["baseline_tokens_per_s"], "{:.1f}"), _n(g["engine_tokens_per_s"], "{:.1f}"),
         _x(g.get("tokens_ratio")), ">= 2x"),
        ("time to first token, 200-token prompt", "", f"{_n(g['engine_ttft_ms'], '{:.1f}')} ms", "", "<= 50 ms"),
    ]
    d = g.get("decode") or {}
    if d:  # decode on the engine's own checkpoint: the baseline column is model.generate + streamer
        rows += [
            (f"decode tokens/s, `seed` checkpoint, 90 tokens ({d.get('decode_path')} path; baseline: generate + streamer)",
             _n(d.get("generate_streamer_tokens_per_s")), _n(d.get("engine_tokens_per_s")), _x(d.get("ratio_vs_streamer")), ">= 1,000, >= 6x"),
            ("decode time to first token, 32-token prompt", "", f"{_n(d.get('ttft_ms_32'), '{:.1f}')} ms", "", "<= 10 ms"),
            ("decode tokens/s, `small` preset", "", _n(d.get("small_tokens_per_s")), "", ">= 400"),
        ]
    if a.get("onscreen_ratio"):
        rows.append(("app: a reply's tokens/s on screen / the same reply headless", "",
                     f"{_n(a.get('onscreen_tokens_per_s'))} / {_n(a.get('headless_tokens_per_s'))}", f"{a['onscreen_ratio']:.2f}", ">= 0.80"))
    if a.get("markdown_onscreen_ratio"):
        rows.append(("app: the same reply's tokens/s on screen as Markdown / as raw text (counted from Enter)", "",
                     f"{_n(a.get('onscreen_markdown_tokens_per_s'))} / {_n(a.get('onscreen_plain_tokens_per_s'))}",
                     f"{a['markdown_onscreen_ratio']:.2f}", ">= 0.90"))
    rows += [
        ("app: first frame after launch / first reply token after Enter", "",
         f"{_n(a.get('first_frame_ms'))} ms / {_n(a.get('first_token_ms'))} ms", "", "<= 500 / <= 150 ms"),
        ("app: first frame of a bare Textual app launched the same way (the floor)", "",
         f"{_n(a.get('textual_floor_first_frame_ms'))} ms", "", ""),
    ]
    if a.get("textual_chat_floor_first_frame_ms"):
        rows.append(("app: first frame of a bare Textual app with the chat screen's widgets and keys", "",
                     f"{_n(a.get('textual_chat_floor_first_frame_ms'))} ms", "", ""))
    rows += [
        ("peak RSS: training `seed` " + (f"(eval of {m['eval_blocks']} blocks)" if "eval_blocks" in m else "(eval of 8 blocks: an old report)")
         + " / chatting", "",
         f"{_n(m.get('train_peak_rss_mb'))} MB / {_n(m.get('chat_peak_rss_mb'))} MB", "", "<= 1.5 GB"),
    ]
    gpu = r.get("gpu")
    if gpu:
        for preset in ("seed", "gpt2"):
            row = gpu.get(preset) or {}
            mfu = f", MFU {row['mfu']:.0%}" if row.get("mfu") else ""
            rows.append((f"GPU training tokens/s, `{preset}` ({gpu['dtype']}, Trainer path)", "", f"{_n(row.get('tokens_per_s'))}{mfu}", "", ""))
    lines = ["| measure | baseline (tutorial) | engine | ratio | target |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    ma = r["machine"]
    where = f"CPU figures: {machine_line(ma)}, {ma['date'][:10]}"
    where += f"; GPU figures: {gpu['device']}." if gpu else "; no GPU."
    return "\n".join(lines) + "\n\n" + where


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.readme_table REPORT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        print(markdown(json.load(f)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
