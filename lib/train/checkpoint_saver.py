"""The outputs of a training run, written by one object (after timm's utils/checkpoint_saver.py).

    saver = CheckpointSaver(output_dir)
    saver.save_epoch(checkpoint, training_state, improved, history, summary)   # after every epoch
    saver.save_final(summary, history, bands)                                  # once, at the end

last.pt (with training_state, for RESUME), best.pt (derived from it when the epoch improved), history.csv and
summary.json. Every file is replaced atomically (a kill leaves the previous one), and a Ctrl-C during
the writes waits until they are done, then stops the run (the SIGINT is held, not lost). On ranks
other than 0 of a distributed run the saver is disabled and writes nothing.
"""
from __future__ import annotations

import csv
import io
import json
import signal
from contextlib import contextmanager
from pathlib import Path

from lib.checkpoint import atomic_write, plain, read_checkpoint, save_checkpoint
from lib.train.plotting import plot_curves


class CheckpointSaver:
    def __init__(self, output_dir: Path | str, enabled: bool = True):
        self.output_dir, self.enabled = Path(output_dir), enabled
        if enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> Path:
        return self.output_dir / "last.pt"

    def save_epoch(self, checkpoint: dict, training_state: dict, improved: bool, history: list[dict],
                   summary: dict) -> None:
        """last.pt (`checkpoint` with `training_state`), then best.pt derived from it (if `improved`),
        history, summary. last first, as timm does: a kill between the two leaves the run resumable at
        its newest epoch, and resume re-derives a missing best.pt (`derive_best`)."""
        if not self.enabled:
            return
        with deferred_sigint():
            last = {**checkpoint, "training_state": training_state}
            save_checkpoint(last, self.last)
            if improved:
                self.derive_best(last)
            write_history(history, self.output_dir / "history.csv")
            write_json(summary, self.output_dir / "summary.json")

    def derive_best(self, last: dict) -> None:
        """best.pt: last.pt's content without its training state (the same bytes as `checkpoint` alone)."""
        save_checkpoint({key: value for key, value in last.items() if key != "training_state"},
                        self.output_dir / "best.pt")

    def repair_best(self, last: dict) -> None:
        """On resume: when last.pt's epoch was the best and best.pt is older or missing (the run was killed
        between the two writes), derive best.pt from last.pt."""
        best_epoch = last["training_state"].get("progress", {}).get("best_epoch")
        best_path = self.output_dir / "best.pt"
        if not self.enabled or best_epoch != last.get("epoch"):
            return
        if not best_path.is_file() or read_checkpoint(best_path).get("epoch") != best_epoch:
            self.derive_best(last)

    def save_final(self, summary: dict, history: list[dict], bands) -> None:
        """summary.json of the whole run (also an interrupted one) and curves.png."""
        if not self.enabled:
            return
        write_json(summary, self.output_dir / "summary.json")
        if history:
            plot_curves(history, bands, self.output_dir / "curves.png")


@contextmanager
def deferred_sigint():
    """Hold a SIGINT (Ctrl-C) that arrives inside the block and raise KeyboardInterrupt at its end, so a
    write in progress completes and the interrupt still stops the run. Where SIGINT is ignored (a run
    started in the background or with nohup), it stays ignored."""
    # SIGTERM too where the run handles it as Ctrl-C (lib.runtime.sigterm_as_ctrl_c)
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if callable(signal.getsignal(s))]
    received = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise KeyboardInterrupt


def write_history(history: list[dict], path: Path) -> None:
    """history.csv, one row per epoch; columns in order of first appearance; a metric without a score (NaN)
    is an empty cell. Atomic, like the checkpoints (a failed write is an OutputError naming the file)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(plain(history))
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))


def write_json(data: dict, path: Path) -> None:
    """JSON without NaN (plain() makes it null); atomic, a failed write is an OutputError naming the file."""
    text = json.dumps(plain(data), indent=2, allow_nan=False, default=str)
    atomic_write(path, lambda handle: handle.write(text.encode()))
