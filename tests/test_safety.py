"""Safety: safetensors only, no remote code, names that cannot escape, arbitrary input."""

import json
import shutil
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.store.checkpoints import CheckpointStore, validate_name
from engine.errors import CheckpointError, UsageError
from engine.events import GenerationFailed, GenerationFinished
from engine.store.settings import Sampling, Settings


def test_remote_code_in_a_checkpoint_never_runs(fresh_dirs, tiny_checkpoint_dir, tmp_path):
    store = CheckpointStore()
    store.root.mkdir(parents=True)
    dst = store.root / "evil"
    shutil.copytree(tiny_checkpoint_dir, dst)
    marker = tmp_path / "pwned"
    (dst / "evil_model.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil_model.EvilModel", "AutoConfig": "evil_model.EvilConfig"}
    (dst / "config.json").write_text(json.dumps(cfg))
    try:
        store.load("evil")
    except CheckpointError:
        pass
    assert not marker.exists()


def test_pickle_weights_are_never_loaded(fresh_dirs, tiny_checkpoint_dir):
    store = CheckpointStore()
    store.root.mkdir(parents=True)
    dst = store.root / "pickled"
    shutil.copytree(tiny_checkpoint_dir, dst)
    (dst / "model.safetensors").unlink()
    (dst / "pytorch_model.bin").write_bytes(b"not really a pickle")
    info = store.get("pickled")
    assert not info.ok and "pickle" in info.broken
    with pytest.raises(CheckpointError):
        store.load("pickled")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=120))
def test_any_name_is_rejected_or_stays_inside_the_store(name):
    root = CheckpointStore("/tmp/store-root").root
    try:
        ok = validate_name(name)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    path = (root / ok).resolve()
    assert path.parent == root.resolve() and path.name == name
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")


@pytest.fixture(scope="module")
def chat(tiny_checkpoint):
    from engine.generation.chat_model import ChatModel

    return ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_prompt_streams_or_ends_cleanly(chat, prompt):
    events = list(chat.stream(prompt, Sampling(max_new_tokens=3, seed=0)))
    assert isinstance(events[-1], GenerationFinished), events[-1]
    assert not any(isinstance(e, GenerationFailed) for e in events)


def test_huge_and_hostile_prompts(chat):
    hostile = "[bold]x[/bold] [link=http://e]y[/link] \x1b[31mred\x1b[0m \x00\x07\x08 " * 10
    for prompt in ("x" * 100_000, hostile, "\n" * 5000, "🙂" * 3000):
        events = list(chat.stream(prompt, Sampling(max_new_tokens=4, seed=1)))
        assert isinstance(events[-1], GenerationFinished)
        assert events[0].prompt_tokens <= chat.n_positions


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
settings_like = st.fixed_dictionaries(
    {},
    optional={
        "active_checkpoint": json_values,
        "theme": json_values,
        "markdown": json_values,
        "sampling": st.fixed_dictionaries({}, optional={k: json_values for k in ("temperature", "top_k", "top_p", "max_new_tokens", "seed", "repetition_penalty")}) | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(settings_like | json_values)
def test_any_settings_document_is_valid_or_rejected(doc):
    try:
        s = Settings.from_dict(doc)
    except (ValueError, UsageError):  # a TypeError here would be a bug, not a rejection
        return
    s.sampling.validated()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_settings_file_loads(tmp_path_factory, blob):
    from engine.store.settings import load_settings

    path = tmp_path_factory.mktemp("settings") / "settings.json"
    path.write_bytes(blob)
    assert isinstance(load_settings(path), Settings)
