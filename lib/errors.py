"""The errors library code raises. Each names the file or constant and what is wrong; only lib/cli.py
turns them into one `error: ...` line and an exit code, so library functions stay usable from Python."""
from __future__ import annotations


class ReportedError(Exception):
    """Base of the errors a command-line tool reports as one line (no traceback)."""


class ConfigError(ReportedError, ValueError):
    """A constant or option that cannot be used (unknown name, wrong type, out of range, bad syntax)."""


class DataError(ReportedError, ValueError):
    """Bad input data; the message names the file and what is wrong."""


class CheckpointError(ReportedError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class TrainingError(ReportedError, RuntimeError):
    """The run cannot go on (for example a NaN loss); the message says which checkpoint, if any, stays."""


class InferenceError(ReportedError, ValueError):
    """Bad settings or input for whole-scene inference; the message says what to change."""


class OutputError(ReportedError, OSError):
    """An output that cannot be written (folder not writable, disk full, held by another run)."""


def os_error_text(error: OSError) -> str:
    """'No space left on device (errno 28)' rather than the repr of the exception, for messages."""
    if error.strerror:
        return f"{error.strerror} (errno {error.errno})" if error.errno else error.strerror
    return f"{type(error).__name__}: {error}"
