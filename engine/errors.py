"""Errors the engine raises for things a user can fix.

Each carries a one-line message meant to be shown as is (no traceback).  ``exit_code``
is what the command line exits with: 2 for bad input or usage, 1 for a failure.
"""


class EngineError(Exception):
    """A failure with a message fit for a user: one line, no traceback.  ``field``: the
    ``TrainConfig`` field (or other named input) it is about, when there is one, so a form can
    mark that input without reading the message."""

    exit_code = 1

    def __init__(self, *args, field: str | None = None):
        super().__init__(*args)
        self.field = field

    def __str__(self) -> str:  # keep it to one line whatever was passed in
        return " ".join(str(self.args[0] if self.args else "").split())


class UsageError(EngineError):
    """Bad arguments or settings."""

    exit_code = 2


class DataError(EngineError):
    """A dataset that cannot be read or is unusable."""

    exit_code = 2


class HubUnavailable(EngineError):
    """The Hugging Face Hub could not be reached for something the user asked for by name."""

    exit_code = 1


class CheckpointError(EngineError):
    """A checkpoint that is missing, broken or cannot be written."""

    exit_code = 1


class StoreBusy(CheckpointError):
    """Another process holds the write lock on a checkpoint."""
