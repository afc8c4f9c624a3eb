import json
import os
import subprocess
import sys
import textwrap

import pytest

from engine.store.checkpoints import CheckpointStore, checkpoint_problem, validate_name
from engine.errors import CheckpointError, StoreBusy, UsageError


@pytest.fixture
def store(fresh_dirs):
    return CheckpointStore()


def copy_checkpoint(store, src, dst_name):
    import shutil

    store.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, store.root / dst_name)
    return store.root / dst_name


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "/abs", "a\\b", ".hidden", "-x", "a" * 101, "x..y", "nul\x00", "sp ace"])
def test_invalid_names_rejected(bad):
    with pytest.raises(UsageError):
        validate_name(bad)


@pytest.mark.parametrize("good", ["t1", "seed-wikitext-20260101", "My_Model.v2", "a+b"])
def test_valid_names(good):
    assert validate_name(good) == good


def test_listing_metadata_and_loading(tiny_checkpoint):
    store = CheckpointStore()
    info = store.get(tiny_checkpoint)
    assert info.ok and info.resumable
    for key in ("dataset", "preset", "params", "steps", "tokens_seen", "train_loss", "val_loss", "perplexity",
                "bits_per_byte", "wall_time_s", "created", "parent"):
        assert key in info.meta
    assert info.meta["steps"] == 8 and info.meta["preset"] == "tiny"
    assert not list(info.path.glob("*.bin")) and (info.path / "model.safetensors").is_file()
    model, tokenizer, _ = store.load(tiny_checkpoint)
    from engine.training.config import DEFAULT_TOKENIZER

    # the default tokenizer: a BPE trained on the run's own text, the model's vocabulary its size
    assert info.meta["tokenizer_spec"] == DEFAULT_TOKENIZER
    assert model.config.n_embd == 64 and len(tokenizer) == model.config.vocab_size


def test_broken_checkpoints_listed_with_reasons(store, tiny_checkpoint_dir):
    good = copy_checkpoint(store, tiny_checkpoint_dir, "good")
    trunc = copy_checkpoint(store, tiny_checkpoint_dir, "truncated")
    w = trunc / "model.safetensors"
    os.truncate(w, w.stat().st_size // 2)
    garbage = copy_checkpoint(store, tiny_checkpoint_dir, "garbage-config")
    (garbage / "config.json").write_text("{not json")
    notok = copy_checkpoint(store, tiny_checkpoint_dir, "no-tokenizer")
    for f in ("tokenizer.json", "vocab.json"):
        (notok / f).unlink(missing_ok=True)
    pickle = copy_checkpoint(store, tiny_checkpoint_dir, "pickled")
    (pickle / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (store.root / "stray-file").write_text("hi")
    infos = {i.name: i for i in store.list()}
    assert infos["good"].ok
    assert "truncated" in infos["truncated"].broken
    assert "config.json" in infos["garbage-config"].broken
    assert "tokenizer" in infos["no-tokenizer"].broken
    assert "pickle" in infos["pickled"].broken
    assert infos["stray-file"].broken == "not a folder"
    for name in ("truncated", "garbage-config", "no-tokenizer", "pickled"):
        with pytest.raises(CheckpointError) as err:
            store.load(name)
        assert "broken" in str(err.value)
    assert good.exists()


def test_publish_is_atomic_and_replaces(store, tiny_checkpoint_dir):
    src = tiny_checkpoint_dir
    files = {f.name: f for f in src.iterdir() if f.is_file() and f.name != "minigpt.json"}
    store.publish("pub", files, {"name": "pub", "steps": 1})
    assert store.get("pub").meta["steps"] == 1
    store.publish("pub", files, {"name": "pub", "steps": 2})
    assert store.get("pub").meta["steps"] == 2
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp") or p.name.startswith(".old")] == []


def test_failed_publish_keeps_previous(store, tiny_checkpoint_dir):
    src = tiny_checkpoint_dir
    files = {f.name: f for f in src.iterdir() if f.is_file() and f.name != "minigpt.json"}
    store.publish("keep", files, {"steps": 1})

    def boom(_dir):
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError) as err:
        store.publish("keep", files, {"steps": 2}, write_extra=boom)
    assert "No space left on device" in str(err.value) and "intact" in str(err.value)
    assert store.get("keep").ok and store.get("keep").meta["steps"] == 1
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]


def test_interrupted_swap_is_recovered(store, tiny_checkpoint_dir):
    path = copy_checkpoint(store, tiny_checkpoint_dir, "swap")
    os.rename(path, store.root / ".old-swap-0123abcd")  # died between the two renames
    (store.root / ".tmp-swap-89abcdef").mkdir()  # and a half-written new one
    names = [i.name for i in store.list()]
    assert names == ["swap"] and store.get("swap").ok
    assert not [p for p in store.root.iterdir() if p.name.startswith((".tmp", ".old"))]


def test_rename_and_delete(store, tiny_checkpoint_dir):
    copy_checkpoint(store, tiny_checkpoint_dir, "one")
    copy_checkpoint(store, tiny_checkpoint_dir, "two")
    with pytest.raises(CheckpointError):
        store.rename("one", "two")
    store.rename("one", "uno")
    assert store.get("uno").meta["name"] == "uno"
    store.delete("uno")
    assert [i.name for i in store.list()] == ["two"]
    with pytest.raises(CheckpointError):
        store.delete("uno")
    with pytest.raises(UsageError):
        store.rename("two", "../escape")


def test_second_process_cannot_write_a_locked_checkpoint(store):
    store.root.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from engine.store.checkpoints import CheckpointStore
            with CheckpointStore({str(store.root)!r}).lock("busy"):
                print("locked", flush=True)
                time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusy) as err:
            with store.lock("busy"):
                pass
        assert f"pid {holder.pid}" in str(err.value)
        assert store.is_locked("busy")
    finally:
        holder.kill()
        holder.wait()
    with store.lock("busy"):
        pass


def test_checkpoint_problem_on_foreign_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert checkpoint_problem(tmp_path) == "missing minigpt.json"
