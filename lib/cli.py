"""Script entry point: known errors become one clear line on stderr and a non-zero exit, not a traceback;
so does Ctrl-C (exit status 130); and the one reader of the command line's `NAME=value` arguments."""
from __future__ import annotations

import sys
from typing import Callable

from lib.errors import ConfigError, ReportedError

KNOWN_ERRORS = (ReportedError, FileNotFoundError)
HELP = ("-h", "--help")


def split_argument(arg: str) -> tuple[str, str]:
    """`NAME=value` -> (NAME, value); the name loses surrounding spaces and leading dashes (--EPOCHS=2 works).
    Anything else is a ConfigError, worded the same for every script."""
    name, sep, value = arg.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not name:
        raise ConfigError(f"cannot read argument {arg!r}: expected NAME=value, e.g. EPOCHS=2")
    return name, value


def clean_message(error: BaseException) -> str:
    """The message of an error, without the worker traceback that DataLoader wraps around it."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    # re-raised from a DataLoader worker: the message starts at the last "[module.]Name: " line of the
    # traceback and may run over several lines (so its last line alone could lose the file name)
    lines = message.strip().splitlines()
    for start in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[start].partition(": ")
        if sep and not head.startswith(" ") and head.rsplit(".", 1)[-1] == type(error).__name__:
            return "\n".join([rest, *lines[start + 1:]])
    return lines[-1]


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except KNOWN_ERRORS as error:
        print(f"error: {clean_message(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C (or a SIGTERM handled as one) outside a tool's own handling
        print("interrupted: stopped before the end", file=sys.stderr)
        raise SystemExit(130) from None  # 128 + SIGINT, the shell's code for Ctrl-C
