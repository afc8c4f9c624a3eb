"""Words per predicted token, for word-level perplexity on word-level text.

Published WikiText tables report perplexity per word: exp(total nats / words), where the
words are the text's whitespace-separated tokens plus one end-of-line per line.  A model with
a subword tokenizer spreads each word over a few tokens; to put its nats over the words those
tokens stand for, each token id gets three numbers:

* ``inner``: words that start inside the token (a non-space character right after a space or
  newline within it) plus the newlines in it (each line's end counts as one word);
* ``lead``: 1 when its first character is not whitespace, so a word starts with it if the
  token before ended in whitespace (``trail``);
* ``trail``: 1 when its last character is whitespace (and for special tokens, which separate
  documents).

Words of a predicted token = inner + lead * trail(previous token).  Summed over the tokens an
evaluation predicts, this counts each word (and line end) of the text they cover exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WordTable:
    inner: list[int]
    lead: list[int]
    trail: list[int]


def count_words(text: str) -> int:
    """Words plus one end-of-line per line, as the WikiText-2 tables count them."""
    return sum(len(line.split()) + 1 for line in text.splitlines())


def _token_texts(tokenizer) -> list[str]:
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out = []
    for text, piece in zip(texts, pieces):
        # SentencePiece vocabularies mark a leading space with U+2581, which decoding one
        # token alone drops.
        if isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
            text = " " + text
        out.append(text)
    return out


def word_table(tokenizer) -> WordTable:
    special = set(tokenizer.all_special_ids)
    n = len(tokenizer)
    inner, lead, trail = [0] * n, [0] * n, [0] * n
    for i, text in enumerate(_token_texts(tokenizer)):
        if i in special or not text:
            trail[i] = 1 if i in special else 0
            continue
        starts = sum(1 for a, b in zip(text, text[1:]) if a.isspace() and not b.isspace())
        inner[i] = starts + text.count("\n")
        lead[i] = 0 if text[0].isspace() else 1
        trail[i] = 1 if text[-1].isspace() else 0
    return WordTable(inner, lead, trail)
