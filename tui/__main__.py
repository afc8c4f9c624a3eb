"""Entry point of the ``minigpt-tui`` command: the app with no command, headless commands otherwise."""

from __future__ import annotations

import sys


def _launch_app(checkpoint: str | None = None) -> int:
    from tui.app import run_app

    return run_app(checkpoint=checkpoint)


def main(argv: list[str] | None = None) -> None:
    from engine.cli import main as cli_main

    sys.exit(cli_main(argv, launch_app=_launch_app))


if __name__ == "__main__":
    main()
