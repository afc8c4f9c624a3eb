import json
from pathlib import Path

import numpy as np
import pytest

from engine.data import sources as data
from engine.errors import DataError, HubUnavailable
from engine.data.tokenizer import load_gpt2

TEXT = "".join(f"Line {i} of a small test corpus, with some words to learn.\n" for i in range(400))


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2()


def test_local_text_file_packs_without_padding_or_loss(tmp_path, gpt2):
    f = tmp_path / "corpus.txt"
    f.write_text(TEXT)
    source = data.resolve(str(f))
    packed = data.pack(source, gpt2, 32)
    stream = np.concatenate([packed.splits["train"], packed.splits["validation"]])
    # every byte of the text is there, in order, and no pad/eos tokens were added inside a file
    assert gpt2.decode(stream.tolist()) == TEXT
    blocks = packed.blocks("train")
    learned = 0
    for i in range(len(blocks)):
        item = blocks[i]
        assert item["input_ids"].shape == (32,)
        learned += int((item["labels"] != -100).sum())
    # each training token is a label exactly once across the blocks: nothing dropped, nothing padded
    assert learned == len(packed.splits["train"])


def test_last_block_overlaps_and_masks():
    stream = np.arange(70, dtype=np.uint16)
    blocks = data.BlockDataset(stream, 32)
    assert len(blocks) == 3
    last = blocks[2]
    assert last["input_ids"].tolist() == list(range(38, 70))
    learned = last["input_ids"][last["labels"] != -100].tolist()
    assert learned == list(range(64, 70))
    assert sum(len(blocks[i]["input_ids"]) for i in range(2)) + len(learned) == 70


@pytest.mark.parametrize("n,block,stride", [(70, 32, 16), (70, 32, 32), (64, 32, 16), (33, 32, 8), (100, 32, 5), (32, 32, 16), (200, 32, 31)])
def test_sliding_windows_score_every_token_once_with_context(n, block, stride):
    blocks = data.BlockDataset(np.arange(n, dtype=np.uint16), block, stride=stride)
    scored = []
    for i in range(len(blocks)):
        item = blocks[i]
        ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
        assert len(ids) == min(n, block) and ids == list(range(ids[0], ids[0] + len(ids)))
        for p in range(1, len(ids)):  # a window's first token is never predicted (no context)
            if labels[p] != -100:
                assert labels[p] == ids[p]
                scored.append(ids[p])
                if i:  # after the first window: at least block - stride tokens of context
                    assert p >= block - stride
    if stride < block:  # every token but the stream's first is scored exactly once
        assert sorted(scored) == list(range(1, n))
    else:  # consecutive blocks: each block's first token has no context and is not scored
        starts = {i * block for i in range(len(blocks) - (1 if blocks.tail else 0))}
        assert sorted(scored) == [t for t in range(n) if t not in starts]
        assert len(blocks) == len(data.BlockDataset(np.arange(n, dtype=np.uint16), block))


@pytest.mark.parametrize("stride", [0, -1, 33])
def test_stride_outside_the_block_is_an_error(stride):
    with pytest.raises(ValueError, match="stride"):
        data.BlockDataset(np.arange(70, dtype=np.uint16), 32, stride=stride)


def test_folder_with_wikitext_layout(tmp_path, gpt2):
    (tmp_path / "wiki.train.raw").write_text(" = Alpha = \n \n Alpha is first .\n" * 40 + " = Beta = \n Beta follows .\n" * 40)
    (tmp_path / "wiki.valid.raw").write_text(" = Gamma = \n Gamma is third .\n" * 30)
    (tmp_path / "wiki.test.raw").write_text(" = Delta = \n Delta is last .\n" * 30)
    source = data.resolve(str(tmp_path))
    assert set(source.splits) == {"train", "validation", "test"}
    assert source.rows_are_lines
    packed = data.pack(source, gpt2, 16)
    eos = gpt2.eos_token_id
    train = packed.splits["train"].tolist()
    # an EOS separates articles (before each top-level heading), none inside an article
    assert train.count(eos) == 79
    assert gpt2.decode([t for t in train if t != eos]) == (" = Alpha = \n \n Alpha is first .\n" * 40 + " = Beta = \n Beta follows .\n" * 40)


def test_jsonl_and_parquet(tmp_path, gpt2):
    rows = [{"text": f"Document number {i} says hello.", "id": i} for i in range(200)]
    j = tmp_path / "docs.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in rows))
    packed = data.pack(data.resolve(str(j)), gpt2, 16)
    eos = gpt2.eos_token_id
    total = packed.tokens("train") + packed.tokens("validation")
    assert np.concatenate([packed.splits["train"], packed.splits["validation"]]).tolist().count(eos) == 200
    import datasets

    p = tmp_path / "docs.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(p))
    packed2 = data.pack(data.resolve(str(p)), gpt2, 16)
    assert packed2.tokens("train") + packed2.tokens("validation") == total


def test_builtin_corpus_has_splits(gpt2):
    source = data.resolve("builtin")
    assert set(source.splits) == {"train", "validation", "test"}
    assert len(source.splits["train"]) > 10 * len(source.splits["validation"]) > 0
    first = source.splits["train"][0]["text"]
    assert first.startswith("Genesis 1\nIn the beginning God created the heaven and the earth.")


def test_pack_is_cached(tmp_path, gpt2):
    f = tmp_path / "c.txt"
    f.write_text(TEXT)
    notes = []
    data.pack(data.resolve(str(f)), gpt2, 32, notes.append)
    data.pack(data.resolve(str(f)), gpt2, 32, notes.append)
    assert sum("tokenizing" in n for n in notes) == 1


def test_default_dataset_falls_back_to_builtin_offline():
    notes = []
    source = data.resolve(None, None, notes.append)
    assert source.spec == "builtin"
    assert any("not reachable" in n for n in notes)


def test_explicit_hub_dataset_offline_is_one_clear_error():
    with pytest.raises(HubUnavailable) as err:
        data.resolve("wikitext", "wikitext-2-raw-v1")
    msg = str(err.value)
    assert "\n" not in msg and "builtin" in msg and "wikitext" in msg


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d / "missing.txt", "not found"),
        (lambda d: (d / "empty.txt").write_text("") and d / "empty.txt" or d / "empty.txt", "no text"),
        (lambda d: (d / "bin.txt").write_bytes(b"\x00\x01\x02binary\x00" * 100) and d / "bin.txt", "binary"),
        (lambda d: (d / "latin1.txt").write_bytes("café crème\n".encode("latin-1") * 50) and d / "latin1.txt", "not UTF-8"),
        (lambda d: (d / "sub").mkdir() or d / "sub", "no text files"),
        (lambda d: (d / "small.txt").write_text("tiny") and d / "small.txt", "too small"),
        (lambda d: (d / "x.docx").write_text("hello") and d / "x.docx", "unsupported"),
    ],
)
def test_bad_datasets_give_one_line_errors(tmp_path, gpt2, make, needle):
    path = make(tmp_path)
    with pytest.raises(DataError) as err:
        data.pack(data.resolve(str(path)), gpt2, 32)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
