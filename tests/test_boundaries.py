"""Contracts that hold by test, not by habit: who imports whom (import-linter), what the app loads
before its first frame, and the versions the snapshots were made with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dev dependency there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _contract(name_start: str) -> dict:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_start))


def test_import_contracts_hold():
    """`lint-imports` over engine/ and tui/ with the contracts in pyproject.toml: all kept."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-4000:]
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", report)
    assert kept and int(kept.group(1)) == len(PYPROJECT["tool"]["importlinter"]["contracts"]) and kept.group(2) == "0", report[-2000:]


def test_first_frame_contract_lists_what_start_up_loads(tmp_path, fresh_dirs):
    """The real start-up, stopped at its first frame: the engine and app modules it has loaded are
    exactly the contract's source modules (packages aside), so the contract covers every one."""
    from tui.app import EXIT_AFTER_FIRST_FRAME_ENV, FIRST_FRAME_ENV

    dump = tmp_path / "modules.txt"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(dump)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
        "from tui.__main__ import main\n"
        "main()\n"
    )
    env = dict(os.environ, **{FIRST_FRAME_ENV: str(tmp_path / "first-frame"), EXIT_AFTER_FIRST_FRAME_ENV: "1", "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    loaded = set(dump.read_text().split())
    assert not loaded & {"torch", "transformers", "datasets"}, "the first frame loaded the model stack"
    ours = {m for m in loaded if m.split(".")[0] in ("engine", "tui")}
    packages = {m for m in ours if (ROOT / m.replace(".", "/") / "__init__.py").exists()}
    for package in packages:  # package __init__s are left out of the contract: they must stay import-free
        source = (ROOT / package.replace(".", "/") / "__init__.py").read_text()
        assert not re.search(r"^\s*(import|from)\s", source, re.M), f"{package}/__init__.py imports something"
    listed = set(_contract("What the app loads before its first frame")["source_modules"])
    assert ours - packages == listed, f"loaded but not in the contract: {sorted(ours - packages - listed)}; listed but not loaded: {sorted(listed - ours)}"


def _dev_requirements() -> dict[str, str]:
    out = {}
    for requirement in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        out[name] = requirement[len(name):]
    return out


def test_the_installed_textual_is_the_one_the_snapshots_were_made_with():
    """The dev extra pins Textual and the snapshot plugin exactly (the snapshots in tests/__snapshots__
    are made with them); a fresh install (.ci/run) must have those versions."""
    dev = _dev_requirements()
    for package in ("textual", "pytest-textual-snapshot"):
        assert dev[package].startswith("=="), f"{package} is not pinned in the dev extra: {dev[package]!r}"
        assert version(package) == dev[package][2:], f"{package} {version(package)} installed, snapshots made with {dev[package][2:]}"


def test_every_pytest_plugin_the_suite_uses_is_declared():
    """Plugins the tests need (the anyio marker, timeouts, snapshots, hypothesis, import-linter)
    are in the dev extra, not only present because something else pulled them in."""
    dev = _dev_requirements()
    assert {"pytest", "anyio", "pytest-timeout", "pytest-textual-snapshot", "syrupy", "hypothesis", "import-linter"} <= dev.keys()
