"""Chat models: the format a checkpoint carries, conversation data and its loss mask, replies that
end at the end of the turn on every decode path, turns cut whole, the scores, and a checkpoint
that plain transformers runs the same way."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import minigpt_cmd
from engine.data import sources as data
from engine.data.chat_format import ASSISTANT, BOS, END, Renderer, Rendered, has_own_format
from engine.evaluation.chat_scores import _reply_log_probs, ranking_items
from engine.store.checkpoints import CheckpointStore
from engine.data.conversations import chitchat_split, pieces
from engine.errors import DataError
from engine.events import GenerationFinished, TokenGenerated
from engine.generation.chat_model import ChatModel, prompt_budget
from engine.store.settings import Sampling

GREEDY = Sampling(temperature=0, repetition_penalty=1.0, max_new_tokens=24)
HELLO = [{"role": "user", "content": "hi, how are you?"}]


@pytest.fixture(scope="module")
def chat_dir(tiny_chat_checkpoint):
    return CheckpointStore().path(tiny_chat_checkpoint)


@pytest.fixture(scope="module")
def chitchat():
    return data.resolve("chitchat")


@pytest.fixture(scope="module")
def tokenizer(chat_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(chat_dir))


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _conversation(i: int) -> list[dict]:
    return [
        {"role": "system", "content": f"You are helper number {i}."},
        {"role": "user", "content": f"hello there, question {i}?"},
        {"role": "assistant", "content": f"Answer {i}: it is fine."},
        {"role": "user", "content": "and then?"},
        {"role": "assistant", "content": "Then we stop.\nBye!"},
    ]


# --- the data -----------------------------------------------------------------------------


def test_chitchat_has_a_fixed_split_by_conversation(chitchat):
    chitchat = data.resolve("chitchat", assistant="second")
    sizes = {split: len(ds) for split, ds in chitchat.splits.items()}
    assert sizes == {"train": 3605, "validation": 197, "test": 215}
    assert [chitchat_split(i) for i in (0, 9, 19, 29, 39)] == ["train", "test", "validation", "test", "validation"]
    whole = {split: {"\n".join(m["content"] for m in c) for c in ds["messages"]} for split, ds in chitchat.splits.items()}
    shared = (whole["train"] | whole["validation"]) & whole["test"]
    assert all(len(text) < 20 for text in shared)  # no test chat is trained on (but a chat of two greetings, "Hello?\nhi")
    both = data.resolve("chitchat", assistant="both")
    assert len(both.splits["train"]) == 2 * sizes["train"] and len(both.splits["test"]) == sizes["test"]
    swapped = both.splits["train"][1]["messages"]
    assert swapped[0]["role"] == "assistant" and swapped[0]["content"] == chitchat.splits["train"][0]["messages"][0]["content"]


def test_template_round_trip_over_hundreds_of_conversations(tokenizer, chitchat):
    """What training renders is what AutoTokenizer.from_pretrained(ckpt).apply_chat_template renders."""
    assert has_own_format(tokenizer)
    convs = list(chitchat.splits["validation"]["messages"]) + [
        [{"role": "system", "content": "Be brief."}, *c] for c in chitchat.splits["test"]["messages"]
    ]
    assert len(convs) > 400
    renderer = Renderer(tokenizer)
    for conv, rendered in zip(convs, renderer.render_many(convs)):
        want = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        assert rendered.ids == list(want["input_ids"])
        assert rendered.mask == list(want["assistant_masks"])
    for conv in convs[:100]:
        opener = conv[:-1] if conv[-1]["role"] == "assistant" else conv
        prompt = tokenizer.apply_chat_template(opener, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert renderer.render_many([opener], add_generation_prompt=True)[0].ids == list(prompt)


def test_only_the_assistants_tokens_and_their_end_of_turn_carry_loss(tokenizer, tmp_path):
    path = _write_jsonl(tmp_path / "chats.jsonl", [{"messages": _conversation(i)} for i in range(40)])
    source = data.resolve(str(path))
    assert source.chat
    packed = data.pack(source, tokenizer, 64)
    assistant, end = tokenizer.convert_tokens_to_ids(ASSISTANT), tokenizer.convert_tokens_to_ids(END)
    learnt = 0
    for split in ("train", "validation"):
        blocks = packed.blocks(split)
        assert len(blocks) > 0
        for i in range(len(blocks)):
            row = blocks[i]
            ids, labels = row["input_ids"].tolist(), row["labels"].tolist()
            speaking = False  # inside an assistant turn: from after <|assistant|> up to its <|end|>
            for token, label in zip(ids, labels):
                assert label == (token if speaking else -100), tokenizer.decode(ids)
                if token == assistant:
                    speaking = True
                elif token == end:
                    speaking = False
            learnt += sum(label != -100 for label in labels)
    assistant_text = sum(len(tokenizer(m["content"])["input_ids"]) + 1 for i in range(40) for m in _conversation(i) if m["role"] == "assistant")
    assert learnt == assistant_text  # every assistant token and end of turn, once


def test_a_conversation_longer_than_the_window_keeps_whole_turns():
    lengths = [1, 10, 20, 30, 25, 90, 12]  # the bos, then turns; one turn longer than the window
    ids = list(range(sum(lengths)))
    starts = [sum(lengths[:i]) for i in range(1, len(lengths))]
    cut = list(pieces(Rendered(ids, [1] * len(ids), starts), 64))
    assert [i for piece, _ in cut for i in piece] == ids
    assert all(len(piece) <= 64 for piece, _ in cut)
    firsts = [piece[0] for piece, _ in cut]
    # whole turns (1+10+20+30 fit, then 25 alone), the long turn cut at the window, then the last turn
    assert firsts == [0, 61, 86, 150, 176]
    assert set(firsts[:3]) <= {0, *starts}


@pytest.mark.parametrize(
    "row, why",
    [
        ({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "role 'bot'"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]}, "'role' and 'content'"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
    ],
)
def test_a_bad_conversation_row_is_named(tmp_path, tokenizer, row, why):
    rows = [{"messages": _conversation(i)} for i in range(30)]
    rows.insert(2, row)
    source = data.resolve(str(_write_jsonl(tmp_path / "bad.jsonl", rows)))
    with pytest.raises(DataError) as err:
        data.pack(source, tokenizer, 64)
    message = str(err.value)
    assert "row 3" in message and why in message and "\n" not in message


def test_a_bad_conversation_row_is_a_one_line_usage_error(tmp_path, cli_env):
    rows = [{"messages": _conversation(i)} for i in range(30)]
    rows.insert(4, {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]})
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    out = subprocess.run([*minigpt_cmd(), "train", "--dataset", str(path), "--preset", "tiny", "--tokenizer", "bpe:300",
                          "--max-steps", "1", "--name", "bad-rows"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "row 5" in lines[-1] and "'narrator'" in lines[-1] and "Traceback" not in out.stderr


# --- the checkpoint -------------------------------------------------------------------------


def test_a_chat_checkpoint_carries_its_format_stop_ids_and_scores(chat_dir, tokenizer, tiny_chat_checkpoint):
    config = json.loads((chat_dir / "generation_config.json").read_text())
    assert config["eos_token_id"] == [tokenizer.convert_tokens_to_ids(END), tokenizer.eos_token_id]
    assert tokenizer.eos_token == BOS and tokenizer.bos_token == BOS
    meta = CheckpointStore().get(tiny_chat_checkpoint).meta
    assert meta["chat"] is True and meta["assistant"] == "both" and meta["dataset_spec"] == "chitchat"
    assert 0 <= meta["eot_rate"] <= 1 and 0 <= meta["ranking_top1"] <= 1
    chat = ChatModel.from_checkpoint(tiny_chat_checkpoint, device="cpu")
    assert chat.is_chat and chat.stop_ids == config["eos_token_id"]


def _copy_with_stop(src, dst, stop_id: int, eos: int):
    shutil.copytree(src, dst)
    config = json.loads((dst / "generation_config.json").read_text())
    config["eos_token_id"] = [stop_id, eos]
    (dst / "generation_config.json").write_text(json.dumps(config))
    return dst


def _finished(events) -> GenerationFinished:
    events = list(events)
    assert isinstance(events[-1], GenerationFinished), events[-1]
    return events[-1]


def test_replies_stop_at_the_checkpoints_end_of_turn_on_every_decode_path(chat_dir, tmp_path):
    """The first stop id in generation_config.json ends the reply, on the fast path, the reference
    path and in the decode child.  The stop id here is a token a seeded reply reaches after a few
    tokens (a tiny model's own end of turn comes too early or too late to test with; a seed gives
    the same tokens on every path)."""
    seeded = Sampling(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=24, seed=5)
    free = ChatModel.from_folder(chat_dir, device="cpu")
    free.stop_ids = []
    prompt = free.encode_chat(HELLO)
    tokens = [c.token_id for e in free.stream(prompt, seeded, details=True) if isinstance(e, TokenGenerated) for c in e.choices]
    k = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])
    copy = _copy_with_stop(chat_dir, tmp_path / "ckpt", tokens[k], free.tokenizer.eos_token_id)
    for decode in ("fast", "reference"):
        chat = ChatModel.from_folder(copy, device="cpu")
        chat.decode = decode
        chat.warm_up()
        assert chat.decode_path == decode
        done = _finished(chat.stream(prompt, seeded))
        assert (done.stop_reason, done.new_tokens, done.stop_token_id) == ("eos", k, tokens[k])
    chat = ChatModel.from_folder(copy, device="cpu")
    assert chat.start_process(("folder", str(copy))), chat.process_note
    try:
        assert chat.in_child_process
        done = _finished(chat.stream(prompt, seeded))
        assert (done.stop_reason, done.new_tokens, done.stop_token_id) == ("eos", k, tokens[k])
    finally:
        chat.close_process()


def test_the_repetition_penalty_leaves_the_stop_ids_alone():
    """A chat prompt holds an end of turn after every turn: penalising it would keep replies from
    ending.  The penalty acts on every other token of the window as before."""
    import torch

    from engine.generation.chat_model import _penalize

    scores = torch.tensor([[2.0, -1.0, 3.0, 4.0, -2.0, 1.0]])
    window = torch.tensor([[0, 1, 2, 3, 3, 4]])
    kept = torch.tensor([[3, 4]])
    got = _penalize(scores.clone(), window, 2.0, kept)
    assert got.tolist() == [[1.0, -2.0, 1.5, 4.0, -2.0, 1.0]]
    assert _penalize(scores.clone(), window, 2.0).tolist() == [[1.0, -2.0, 1.5, 2.0, -4.0, 1.0]]


def test_fit_chat_leaves_out_whole_old_turns(tiny_chat_checkpoint):
    chat = ChatModel.from_checkpoint(tiny_chat_checkpoint, device="cpu")
    system = {"role": "system", "content": "Be kind."}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn number {i} says a few words"} for i in range(20)]
    ids, dropped = chat.fit_chat([system, *turns], max_new_tokens=16)
    assert dropped > 0 and len(ids) <= prompt_budget(chat.n_positions, 16)
    assert ids == chat.encode_chat([system, *turns[dropped:]])
    assert len(chat.encode_chat([system, *turns[dropped - 1 :]])) > prompt_budget(chat.n_positions, 16)  # no more than needed
    short = [system, *turns[:2]]
    assert chat.fit_chat(short, 16) == (chat.encode_chat(short), 0)
    huge = [system, {"role": "user", "content": "word " * 500}]  # the last message alone: kept (stream cuts it)
    assert chat.fit_chat(huge, 16)[1] == 0


# --- scores ---------------------------------------------------------------------------------


def test_reply_log_probs_batched_equal_a_direct_forward(tiny_chat_checkpoint):
    import torch

    chat = ChatModel.from_checkpoint(tiny_chat_checkpoint, device="cpu")
    sequences = [(chat.encode_chat(HELLO) + chat.encode("fine thanks"), 2), (chat.encode("a b c d e f g h"), 5), ([5, 6, 7], 1)]
    batched = _reply_log_probs(chat, sequences, batch_size=3)
    with torch.no_grad():
        for (ids, n), got in zip(sequences, batched):
            logp = chat.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
            want = sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
            assert got == pytest.approx(want, abs=1e-3)


def test_ranking_items_put_a_true_reply_among_other_conversations_turns(chitchat):
    convs = list(chitchat.splits["test"]["messages"])
    items = ranking_items(convs, 60, seed=3)
    assert len(items) == 60
    for context, true, distractors in items:
        conv = next(c for c in convs if c[: len(context)] == context and c[len(context) : len(context) + 1] == [{"role": "assistant", "content": true}])
        assert context[-1]["role"] == "user" and len(distractors) == 5
        assert all(any(m == {"role": "assistant", "content": d} for c in convs if c is not conv for m in c) for d in distractors)


def test_eval_reports_the_chat_scores(tiny_chat_checkpoint, tmp_path, cli_env):
    path = _write_jsonl(tmp_path / "held.jsonl", [{"messages": _conversation(i)[1:]} for i in range(12)])
    out = subprocess.run([*minigpt_cmd(), "eval", "--checkpoint", tiny_chat_checkpoint, "--dataset", str(path)],
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["eot_replies"] == 12 and report["ranking_items"] == 12
    assert 0 <= report["eot_rate"] <= 1 and 0 <= report["ranking_top1"] <= 1 and report["reply_tokens"] <= 64


# --- portable -------------------------------------------------------------------------------


def test_a_transformers_pipeline_gives_the_apps_greedy_reply(chat_dir, tiny_chat_checkpoint):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(chat_dir), device="cpu")
    app = ChatModel.from_checkpoint(tiny_chat_checkpoint, device="cpu")
    for messages in (HELLO, [{"role": "system", "content": "Be brief."}, *HELLO, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "why?"}]):
        out = pipe(messages, max_new_tokens=GREEDY.max_new_tokens, do_sample=False)
        reply = out[0]["generated_text"][-1]
        ours = app.generate_text(app.encode_chat(messages), GREEDY)
        assert ours and reply["role"] == "assistant" and reply["content"] == ours


def test_a_text_checkpoint_chat_tuned_with_init_gets_the_format(tiny_checkpoint_dir, tmp_path):
    from transformers import AutoTokenizer

    from engine.events import TrainFinished
    from engine.training.config import TrainConfig
    from engine.training.job import TrainingJob

    path = _write_jsonl(tmp_path / "chats.jsonl", [{"messages": _conversation(i)} for i in range(30)])
    before = len(AutoTokenizer.from_pretrained(str(tiny_checkpoint_dir)))
    result = TrainingJob(TrainConfig(dataset=str(path), init=str(tiny_checkpoint_dir), max_steps=2, name="tuned", eval_blocks=4)).run()
    assert isinstance(result, TrainFinished), result
    chat = ChatModel.from_checkpoint("tuned", device="cpu")
    assert has_own_format(chat.tokenizer) and len(chat.tokenizer) == before + 4
    assert chat.model.get_input_embeddings().num_embeddings >= len(chat.tokenizer)
    assert chat.stop_ids[0] == chat.tokenizer.convert_tokens_to_ids(END)
