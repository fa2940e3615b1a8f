"""Outputs that never destroy data: every path is checked against the inputs and the other outputs before
any work, every file is written under a temporary name next to its final one, and all are renamed only
when the whole run has succeeded (an interrupted or failed run leaves its final names untouched)."""
from __future__ import annotations

import os
from pathlib import Path

from lib.checkpoint import same_file
from lib.errors import InferenceError, OutputError


def check_distinct(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse an output that is an input or another output (it would be overwritten by the run)."""
    named_outputs = [(name, Path(path)) for name, path in outputs.items() if path is not None]
    named_inputs = [(name, Path(path)) for name, path in inputs.items() if path is not None]
    for i, (name, path) in enumerate(named_outputs):
        for input_name, input_path in named_inputs:
            if same_file(path, input_path):
                raise InferenceError(f"{path}: the {name} output is the {input_name} input; "
                                     f"it would be overwritten; choose another output path")
        for other_name, other in named_outputs[:i]:
            if same_file(path, other):
                raise InferenceError(f"{path}: the {name} output and the {other_name} output are one file; "
                                     f"give each its own path")


def make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path.parent}: cannot create the output folder ({error.strerror})") from None


def temporary_name(path: Path) -> Path:
    """A hidden name in the same folder (so the rename is atomic), keeping the suffix for drivers."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


class OutputSet:
    """Temporary files of one run and their final names; `commit()` renames them all, `discard()` (on
    failure) removes them. Use as a context manager: an exception discards."""

    def __init__(self):
        self.pending: dict[Path, Path] = {}   # final -> temporary
        self.scratch: list[Path] = []

    def add(self, final: Path) -> Path:
        final = Path(final)
        make_folder(final)
        if final.is_dir():
            raise OutputError(f"{final}: is a folder; give a file path for the output")
        temporary = temporary_name(final)
        self.pending[final] = temporary
        return temporary

    def add_scratch(self, path: Path) -> Path:
        """A working file removed at the end whatever happens."""
        make_folder(Path(path))
        self.scratch.append(Path(path))
        return Path(path)

    def commit(self) -> None:
        for final, temporary in self.pending.items():
            if not temporary.exists():
                raise OutputError(f"{final}: the run did not write it")
        for final, temporary in self.pending.items():
            os.replace(temporary, final)
        self.pending.clear()

    def discard(self) -> None:
        for temporary in [*self.pending.values(), *self.scratch]:
            temporary.unlink(missing_ok=True)
            sidecar = temporary.with_name(temporary.name + ".aux.xml")
            sidecar.unlink(missing_ok=True)
        self.pending.clear()

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.discard()
        for path in self.scratch:
            path.unlink(missing_ok=True)
