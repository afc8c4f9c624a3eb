"""What the README promises for the command line, option by option (in-process ``main``)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import SHARED_DATA, skip_unless_ci
from engine.store.checkpoints import CheckpointStore
from engine.cli import main

RAW = SHARED_DATA / "wikitext-2-raw" / "wiki.valid.raw"
TOKENS = SHARED_DATA / "wikitext-2" / "wiki.valid.tokens"


@pytest.fixture
def small_files(tmp_path):
    """A single .raw file and a single .tokens file: the first lines of WikiText-2's validation split."""
    if not (RAW.is_file() and TOKENS.is_file()):
        skip_unless_ci(f"WikiText-2 not found in {SHARED_DATA}")
    out = {}
    for src, name in ((RAW, "corpus.raw"), (TOKENS, "corpus.tokens")):
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:400]
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
        out[name.split(".")[1]] = tmp_path / name
    return out


def _train(args, capsys) -> tuple[int, str]:
    code = main(["train", "--preset", "tiny", "--eval-every", "1000", *args])
    return code, capsys.readouterr().err


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
def test_single_files_tokenizer_path_block_size_device_and_epochs(fresh_dirs, small_files, tiny_checkpoint_dir, capsys):
    tok = str(tiny_checkpoint_dir)  # a folder holding a saved tokenizer
    code, err = _train(["--dataset", str(small_files["raw"]), "--tokenizer", tok, "--block-size", "32", "--device", "cpu",
                        "--epochs", "1", "--batch-size", "4", "--name", "raw1"], capsys)
    assert code == 0, err
    meta = CheckpointStore().get("raw1").meta
    assert meta["block_size"] == 32 and meta["device"] == "cpu" and meta["tokenizer_spec"] == tok
    assert meta["dataset"] == str(small_files["raw"])
    one_epoch = meta["steps"]
    assert one_epoch >= 2 and meta["tokens_seen"] == one_epoch * 4 * 32
    # --epochs 2 plans twice the steps (the same data, the same batches per epoch)
    code, err = _train(["--dataset", str(small_files["raw"]), "--tokenizer", tok, "--block-size", "32", "--device", "cpu",
                        "--epochs", "2", "--batch-size", "4", "--name", "raw2"], capsys)
    assert code == 0, err
    assert CheckpointStore().get("raw2").meta["steps"] == 2 * one_epoch
    # a .tokens file (word-level WikiText) trains the same way
    code, err = _train(["--dataset", str(small_files["tokens"]), "--tokenizer", tok, "--block-size", "16", "--max-steps", "2",
                        "--name", "tok1"], capsys)
    assert code == 0, err
    meta = CheckpointStore().get("tok1").meta
    assert meta["steps"] == 2 and meta["block_size"] == 16 and meta["dataset"] == str(small_files["tokens"])
    # a block above the model's positions is refused up front
    code, err = _train(["--dataset", str(small_files["raw"]), "--init", tok, "--block-size", "128", "--name", "nope"], capsys)
    assert code == 2 and "64 positions" in err


def test_gpt2_preset_builds_gpt2_small():
    from engine.model import build_model, count_params, get_preset

    preset = get_preset("gpt2")
    model = build_model(preset, 50257, preset.block_size, 50256)
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions) == (12, 768, 12, 1024)
    assert 124_000_000 < count_params(model) < 125_000_000


def _generate(checkpoint, args, capsys, monkeypatch) -> tuple[str, int]:
    monkeypatch.setenv("MINIGPT_STATS", "1")
    assert main(["generate", "--checkpoint", checkpoint, "--prompt", "And God said", *args]) == 0
    out = capsys.readouterr()
    stats = [line for line in out.err.splitlines() if " tokens, " in line]
    return out.out, int(stats[-1].split(":", 1)[-1].split()[0])


def test_generate_sampling_flags(tiny_checkpoint, capsys, monkeypatch):
    greedy, n = _generate(tiny_checkpoint, ["--temperature", "0", "--max-new-tokens", "10"], capsys, monkeypatch)
    assert n <= 10 and greedy.strip()
    # top-k 1 keeps only the best token: the same reply as greedy, whatever the temperature and seed
    top1, _ = _generate(tiny_checkpoint, ["--temperature", "1.5", "--top-k", "1", "--seed", "7", "--max-new-tokens", "10"], capsys, monkeypatch)
    assert top1 == greedy
    # a tiny top-p also keeps only the best token
    topp, _ = _generate(tiny_checkpoint, ["--temperature", "1.5", "--top-k", "0", "--top-p", "0.000001", "--seed", "3", "--max-new-tokens", "10"], capsys, monkeypatch)
    assert topp == greedy
    # the same seed gives the same sample; --max-new-tokens bounds the reply
    a, n = _generate(tiny_checkpoint, ["--temperature", "1.0", "--seed", "5", "--max-new-tokens", "4"], capsys, monkeypatch)
    b, _ = _generate(tiny_checkpoint, ["--temperature", "1.0", "--seed", "5", "--max-new-tokens", "4"], capsys, monkeypatch)
    assert a == b and n <= 4
    # a strong repetition penalty changes greedy decoding of a model that repeats itself
    pen, _ = _generate(tiny_checkpoint, ["--temperature", "0", "--repetition-penalty", "5", "--max-new-tokens", "10"], capsys, monkeypatch)
    assert pen != greedy


@pytest.mark.slow  # over 40 s on 2 cores: CI runs it with -m slow
def test_eval_split_and_dataset(tiny_checkpoint, small_files, capsys):
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--split", "test"]) == 0
    on_test = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", tiny_checkpoint]) == 0
    on_valid = json.loads(capsys.readouterr().out)
    assert on_test["split"] == "test" and on_valid["split"] == "validation" and on_test["tokens"] != on_valid["tokens"]
    # another dataset: a single .raw file (its validation split is carved from it)
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(small_files["raw"]), "--split", "validation"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["dataset"] == str(small_files["raw"]) and other["split"] == "validation"
    assert other["tokens"] not in (on_valid["tokens"], on_test["tokens"]) and math.isfinite(other["bits_per_byte"])
    assert main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", str(small_files["raw"]), "--split", "test"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("minigpt-tui: note:")]
    assert errors == [f"minigpt-tui: dataset {small_files['raw']} has no test split"]


def test_train_flags_are_the_config_fields():
    """Every TrainConfig field is a `train` flag (HfArgumentParser over the dataclass), spelled
    with dashes, and no flag means the dataclass default."""
    from dataclasses import fields

    from engine.cli import train_config
    from engine.training.config import TrainConfig

    argv = ("--dataset d --dataset-config c --tokenizer bpe:512 --preset tiny --init m --block-size 64 --batch-size 4 "
            "--epochs 2.5 --max-steps 9 --lr 3e-3 --eval-every 5 --save-every 6 --name n --resume r --device cpu --seed 7 "
            "--warmup-steps 3 --weight-decay 0 --adam-beta2 0.9 --embedding-lr-scale 2 --activation gelu --warmdown 0.6 --grad-accum 2 --eval-blocks 8 --sample-tokens 5 --dtype fp32 "
            "--time 1h30m --arch llama --optimizer muon --word-level --assistant second").split()
    config = train_config(argv)
    assert config == TrainConfig(
        dataset="d", dataset_config="c", tokenizer="bpe:512", preset="tiny", init="m", block_size=64, batch_size=4,
        epochs=2.5, max_steps=9, lr=3e-3, eval_every=5, save_every=6, name="n", resume="r", device="cpu", seed=7,
        warmup_steps=3, weight_decay=0.0, adam_beta2=0.9, embedding_lr_scale=2.0, activation="gelu", warmdown=0.6, grad_accum=2, eval_blocks=8, sample_tokens=5, dtype="fp32",
        time_budget=5400.0, arch="llama", optimizer="muon", word_level=True, assistant="second",
    )
    assert [f.name for f in fields(TrainConfig) if getattr(config, f.name) == f.default] == []  # each flag reached its field
    assert train_config([]) == TrainConfig()


def test_train_help_lists_the_config_flags(capsys):
    from engine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: minigpt-tui train")
    for flag in ("--time", "--warmdown", "--weight-decay", "--word-level", "--preset {tiny,seed,small,gpt2}"):
        assert flag in out, flag
