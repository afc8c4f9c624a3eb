"""Word-level perplexity on word-level text, against a value worked out by hand."""

import json
import math

import pytest
import torch

from engine.data import sources as data
from engine.evaluation.perplexity import evaluate
from engine.model import PRESETS, build_model
from engine.data.tokenizer import load_gpt2, token_byte_lengths
from engine.evaluation.words import count_words, word_table

# WikiText's word-level layout: words split by single spaces, a space before each line
TEXT = " = Cats = \n \n The cat sat on the mat . \n It was happy . \n"
# words plus one end-of-line per line: (3 + 1) + (0 + 1) + (7 + 1) + (4 + 1)
WORDS = 18
# The evaluation predicts every token but the first (" =", which has no context), so the
# predicted tokens cover every word and line end but that first "=".
PREDICTED_WORDS = WORDS - 1


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2()


def test_word_count_follows_the_published_convention():
    assert count_words(TEXT) == WORDS


def test_word_perplexity_on_a_tiny_tokens_file(tmp_path, gpt2):
    path = tmp_path / "tiny.tokens"
    path.write_text(TEXT)
    source = data.resolve(str(path))
    assert source.word_level  # .tokens files are word-level
    packed = data.pack(source, gpt2, 64, hold_out=False)  # the whole file, one short block
    stream = packed.splits["train"]
    assert gpt2.decode(stream.tolist()) == TEXT

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"], len(gpt2), 64, gpt2.eos_token_id).eval()
    result = evaluate(model, packed.blocks("train"), token_byte_lengths(gpt2), word_table=word_table(gpt2))

    # by hand: the nats of each predicted token from the model's logits, over the words
    ids = torch.as_tensor(stream.astype("int64"))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    nats = -sum(float(logp[i, ids[0, i + 1]]) for i in range(ids.shape[1] - 1))
    assert result.words == PREDICTED_WORDS
    assert result.tokens == ids.shape[1] - 1
    assert result.word_perplexity == pytest.approx(math.exp(nats / PREDICTED_WORDS), rel=1e-4)
    assert result.perplexity == pytest.approx(math.exp(nats / result.tokens), rel=1e-4)


def test_sliding_windows_predict_each_token_from_the_tokens_before_it(tmp_path, gpt2):
    path = tmp_path / "tiny.tokens"
    path.write_text(TEXT * 3)
    block = 16
    packed = data.pack(data.resolve(str(path)), gpt2, block, hold_out=False)
    stream = torch.as_tensor(packed.splits["train"].astype("int64"))
    assert len(stream) > 3 * block

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"], len(gpt2), block, gpt2.eos_token_id).eval()
    # stride 1: after the first window, each window scores only its last token
    result = evaluate(model, packed.blocks("train", stride=1), token_byte_lengths(gpt2), word_table=word_table(gpt2))

    # by hand: token t predicted from the (at most block - 1) tokens before it
    nats = 0.0
    with torch.no_grad():
        for t in range(1, len(stream)):
            context = stream[max(0, t - block + 1) : t][None]
            nats -= float(torch.log_softmax(model(input_ids=context).logits[0, -1].double(), dim=-1)[stream[t]])
    assert result.tokens == len(stream) - 1
    assert result.words == 3 * WORDS - 1  # every word and line end but the first "="
    assert result.loss == pytest.approx(nats / result.tokens, rel=1e-4)
    assert result.word_perplexity == pytest.approx(math.exp(nats / result.words), rel=1e-4)
    # the default, consecutive blocks, gives each token less context: a different loss
    plain = evaluate(model, packed.blocks("train"), token_byte_lengths(gpt2), word_table=word_table(gpt2))
    assert plain.loss != pytest.approx(result.loss, rel=1e-4)


def test_raw_text_is_not_word_level(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("Some text.\n" * 50)
    assert not data.resolve(str(path)).word_level


def test_eval_command_on_a_single_word_level_file(tiny_checkpoint, tmp_path, capsys):
    from engine.store.checkpoints import CheckpointStore
    from engine.cli import main

    _model, tokenizer, _info = CheckpointStore().load(tiny_checkpoint, "cpu")  # the checkpoint's own tokenizer

    path = tmp_path / "valid.tokens"
    path.write_text(TEXT * 3)
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(path), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the whole file is evaluated (nothing held out): its tokens, an end-of-text before the
    # 2nd and 3rd article's heading, less the first token; every word is predicted but the
    # first, when that first token holds it (GPT-2's " ="; a BPE may start with " " alone)
    ids = tokenizer(TEXT * 3, add_special_tokens=False)["input_ids"]
    assert report["split"] == "whole file"
    assert report["tokens"] == len(ids) + 2 - 1
    assert report["words"] == 3 * WORDS - (1 if tokenizer.decode(ids[:1]).strip() else 0)
    assert report["word_perplexity"] == pytest.approx(math.exp(report["loss"] * report["tokens"] / report["words"]), rel=1e-3)
    assert report["stride"] == report["window"]

    # sliding windows over a file longer than the window: every token but the first is scored,
    # where consecutive blocks leave out the first token of each whole block
    longer_file = tmp_path / "longer.tokens"
    longer_file.write_text(TEXT * 12)
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(longer_file), "--device", "cpu"]) == 0
    blocks = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(longer_file), "--device", "cpu", "--stride", "8"]) == 0
    strided = json.loads(capsys.readouterr().out)
    stream = strided["tokens"] + 1
    whole_blocks = stream // blocks["window"]
    assert whole_blocks >= 2 and strided["stride"] == 8 and blocks["stride"] == blocks["window"]
    assert strided["tokens"] - blocks["tokens"] == whole_blocks - 1
    assert strided["words"] >= blocks["words"] and strided["loss"] != blocks["loss"]
    longer = report["window"] + 1
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(path), "--device", "cpu", "--stride", str(longer)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("minigpt-tui: note:")]
    assert errors == [f"minigpt-tui: --stride {longer} is longer than the checkpoint's window ({report['window']} tokens)"]
