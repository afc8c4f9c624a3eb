"""The checkpoint store: ``user_data_dir/checkpoints/<name>/``.

A checkpoint folder holds the ``save_pretrained`` model (safetensors only), its tokenizer,
``minigpt.json`` metadata, and ``resume/`` (optimizer, scheduler and RNG state for
``--resume``).  Saves are atomic: everything is written to a hidden temporary folder which is
then renamed into place, so a crash or ``kill -9`` never leaves a half checkpoint that lists as
good.  Writers take a per-name lock (``fcntl.flock``) so two processes cannot write the same
checkpoint; readers need no lock.  Hidden entries (``.tmp-*``, ``.old-*``, ``.runs``, ``.locks``)
are never listed, and leftovers of a crashed writer are cleaned up or restored on listing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from engine.store import atomic

from engine.store import paths
from engine.store.record import CheckpointRecord
from engine.errors import CheckpointError, StoreBusy, UsageError

META_FILE = "minigpt.json"
RESUME_DIR = "resume"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILES = (WEIGHTS_FILE, "config.json", "generation_config.json")  # + the tokenizer's files
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json")  # + rng_state*.pth, under RESUME_DIR
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_HIDDEN_RE = re.compile(r"^\.(tmp|old|trash)-(?P<name>.+)-[0-9a-f]{8}$")


def validate_name(name: str) -> str:
    """A checkpoint name: letters, digits, '.', '_', '-', '+'; no separators, no '..', <= 100 chars."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise UsageError(
            f"invalid checkpoint name {name!r}: use up to 100 letters, digits, '.', '_', '-' or '+', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return name


@dataclass
class CheckpointInfo:
    name: str
    path: Path
    meta: dict = field(default_factory=dict)  # minigpt.json as it is on disk
    broken: str | None = None
    size_bytes: int = 0
    record: CheckpointRecord = field(default_factory=CheckpointRecord)  # the same, typed

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def resumable(self) -> bool:
        return self.ok and (self.path / RESUME_DIR / "trainer_state.json").is_file()


def safetensors_problem(path: Path) -> str | None:
    """Check a safetensors file's header and length without loading it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return f"{path.name} has a bad header"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{path.name} has a bad header"
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return f"{path.name} has a bad header"
    if size < 8 + n + end:
        return f"{path.name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be loaded, or None when it looks good."""
    if not path.is_dir():
        return "not a folder"
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        return f"contains pickle file {pickles[0]} (only safetensors are loaded)"
    meta = path / META_FILE
    if not meta.is_file():
        return f"missing {META_FILE}"
    for name in (META_FILE, "config.json"):
        f = path / name
        if not f.is_file():
            return f"missing {name}"
        try:
            if not isinstance(json.loads(f.read_text(encoding="utf-8")), dict):
                return f"{name} is not a JSON object"
        except (OSError, ValueError):
            return f"{name} is not valid JSON"
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        return f"missing {WEIGHTS_FILE}"
    problem = safetensors_problem(weights)
    if problem:
        return problem
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        return "missing tokenizer"
    return None


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        atomic.fsync_dir(Path(root))


class _Locks:
    """Locks this process holds: path -> (fd, owning thread, depth).  Re-entrant for the owning
    thread only, so a job can publish under the lock it holds for its whole run while another
    thread of the same process (the app) is still kept out."""

    held: dict[str, tuple[int, int, int]] = {}
    guard = threading.Lock()


class CheckpointStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.checkpoints_dir()

    # --- paths ---
    def path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def run_dir(self, name: str) -> Path:
        return self.root / ".runs" / validate_name(name)

    def exists(self, name: str) -> bool:
        path = self.path(name)
        if self.root.is_dir():
            self._recover()
        return path.exists()

    # --- locking ---
    def _lock_path(self, name: str) -> str:
        validate_name(name)
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return str(lock_dir / f"{name}.lock")

    @contextlib.contextmanager
    def lock(self, name: str):
        """Hold the write lock of ``name``; raises StoreBusy when another process or thread holds it."""
        import fcntl

        key = self._lock_path(name)
        me = threading.get_ident()
        with _Locks.guard:
            held = _Locks.held.get(key)
            if held and held[1] != me:
                raise StoreBusy(f"checkpoint '{name}' is being written by another task in this app")
            if held:
                _Locks.held[key] = (held[0], me, held[2] + 1)
        if not held:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                except OSError:
                    holder = ""
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise StoreBusy(f"checkpoint '{name}' is being written by another process{who}") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            with _Locks.guard:
                _Locks.held[key] = (fd, me, 1)
        try:
            yield
        finally:
            with _Locks.guard:
                fd, owner, depth = _Locks.held[key]
                if depth > 1:
                    _Locks.held[key] = (fd, owner, depth - 1)
                else:
                    del _Locks.held[key]
                    os.close(fd)  # releases the flock

    def _held_here(self, name: str) -> bool:
        """Whether this thread holds the lock of ``name`` (so it may tidy that name's leftovers)."""
        try:
            key = self._lock_path(name)
        except (UsageError, OSError):
            return False
        with _Locks.guard:
            held = _Locks.held.get(key)
        return bool(held) and held[1] == threading.get_ident()

    def is_locked(self, name: str) -> bool:
        """Whether any writer (this process included) holds ``name``."""
        import fcntl

        try:
            key = self._lock_path(name)
        except (UsageError, OSError):
            return True
        with _Locks.guard:
            if key in _Locks.held:
                return True
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    # --- listing ---
    def list(self) -> list[CheckpointInfo]:
        if not self.root.is_dir():
            return []
        self._recover()
        infos = []
        for entry in sorted(self.root.iterdir(), key=lambda p: p.name.lower()):
            if entry.name.startswith("."):
                continue
            infos.append(self._info(entry))
        return infos

    def _info(self, path: Path) -> CheckpointInfo:
        name = path.name
        problem = checkpoint_problem(path)
        meta: dict = {}
        if problem is None or not problem.startswith(META_FILE):
            try:
                meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
                if not isinstance(meta, dict):
                    meta = {}
            except (OSError, ValueError):
                meta = {}
        if problem is None:
            try:
                validate_name(name)
            except UsageError:
                problem = "invalid name"
        return CheckpointInfo(
            name=name, path=path, meta=meta, broken=problem, size_bytes=_dir_size(path) if path.is_dir() else 0,
            record=CheckpointRecord.from_json(meta),
        )

    def get(self, name: str) -> CheckpointInfo:
        path = self.path(name)
        if not self.exists(name):
            known = [c.name for c in self.list()]
            hint = f"; saved: {', '.join(known[:8])}" if known else "; none saved yet"
            raise CheckpointError(f"no checkpoint named '{name}'{hint}")
        return self._info(path)

    def _recover(self) -> None:
        """Finish or undo what a crashed writer left behind (only where no live writer holds the name)."""
        for entry in list(self.root.iterdir()):
            m = _HIDDEN_RE.match(entry.name)
            if not m:
                continue
            name = m.group("name")
            try:
                validate_name(name)
            except UsageError:
                continue
            if self.is_locked(name) and not self._held_here(name):
                continue
            kind = m.group(1)
            final = self.root / name
            if kind == "old" and not final.exists() and checkpoint_problem(entry) is None:
                os.rename(entry, final)  # the swap died between its two renames: put the old one back
            else:
                shutil.rmtree(entry, ignore_errors=True)
        runs = self.root / ".runs"
        if runs.is_dir():
            for entry in list(runs.iterdir()):
                if entry.is_dir() and not self.is_locked(entry.name):
                    shutil.rmtree(entry, ignore_errors=True)

    # --- writing ---
    def publish(
        self,
        name: str,
        files: dict[str, Path],
        meta: dict,
        write_extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """Atomically (re)place checkpoint ``name`` with ``files`` (relative path -> source file)
        plus whatever ``write_extra`` writes, plus ``meta`` as minigpt.json."""
        validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock(name):
            tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
            try:
                tmp.mkdir()
                for rel, src in files.items():
                    dst = tmp / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    link_or_copy(Path(src), dst)
                if write_extra:
                    write_extra(tmp)
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                _fsync_tree(tmp)
                problem = checkpoint_problem(tmp)
                if problem:
                    raise CheckpointError(f"refusing to publish checkpoint '{name}': {problem}")
                self._swap_in(tmp, self.root / name)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                reason = exc.strerror or str(exc)
                raise CheckpointError(f"could not save checkpoint '{name}': {reason}; the previous save is intact") from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self.root / name

    def _swap_in(self, tmp: Path, final: Path) -> None:
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
        os.rename(tmp, final)
        atomic.fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def update_meta(self, name: str, **changes) -> None:
        with self.lock(name):
            info = self.get(name)
            atomic.write_json(info.path / META_FILE, {**info.meta, **changes})

    def delete(self, name: str) -> None:
        with self.lock(name):
            path = self.path(name)
            if not path.exists():
                raise CheckpointError(f"no checkpoint named '{name}'")
            trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        validate_name(new)
        if old == new:
            return
        with self.lock(old), self.lock(new):
            src, dst = self.path(old), self.path(new)
            if not src.exists():
                raise CheckpointError(f"no checkpoint named '{old}'")
            if dst.exists():
                raise CheckpointError(f"a checkpoint named '{new}' already exists")
            os.rename(src, dst)
            atomic.fsync_dir(self.root)
            if (dst / META_FILE).is_file():
                try:
                    meta = json.loads((dst / META_FILE).read_text(encoding="utf-8"))
                    atomic.write_json(dst / META_FILE, {**meta, "name": new})
                except (OSError, ValueError):
                    pass

    # --- loading ---
    def load(self, name: str, device: str = "cpu"):
        """(model, tokenizer, info) from safetensors, never running remote code."""
        info = self.get(name)
        if not info.ok:
            raise CheckpointError(f"checkpoint '{name}' is broken: {info.broken}")
        return load_model_dir(info.path, device) + (info,)


def load_model_dir(path: Path, device: str = "cpu"):
    """(model, tokenizer) from a local folder, safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.model import quiet_transformers

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, RuntimeError ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load {path.name}: {first}") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def hf_cache_models() -> list[dict]:
    """Causal LMs with safetensors weights in the local Hugging Face cache."""
    try:
        from huggingface_hub import scan_cache_dir

        report = scan_cache_dir()
    except Exception:
        return []
    found = []
    for repo in report.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            names = {f.file_name for f in rev.files}
            if "config.json" in names and any(n.endswith(".safetensors") for n in names):
                found.append({"repo_id": repo.repo_id, "path": str(rev.snapshot_path), "size_bytes": rev.size_on_disk})
                break
    return found


def now_iso() -> str:
    """Now, in UTC, as the record's ``created`` and ``updated`` write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
