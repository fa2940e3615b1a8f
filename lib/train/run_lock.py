"""One run per output folder: OUTPUT_DIR/run.lock is held while a run trains.

    @holds_output_dir
    def train(constants, model_name, ...): ...

The lock is an advisory `fcntl.flock` on OUTPUT_DIR/run.lock. The kernel drops it when the process ends,
however it ends (also SIGKILL), so the file a killed run leaves behind is stale and the next run takes
it over; a run that ends normally, by an error or by Ctrl-C removes it. The file holds the holder's PID,
host, start time and command, for the message of a second run. Taking the lock creates the folder and
writes a file in it, so it is also the check that OUTPUT_DIR can be written, before any data is read.
Under torchrun only rank 0 takes it (the other ranks write nothing).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from lib.checkpoint import same_file
from lib.errors import ConfigError, OutputError, os_error_text
from lib.runtime import sigterm_as_ctrl_c

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the project runs on Linux)
    fcntl = None

LOCK_NAME = "run.lock"
# what a run writes into OUTPUT_DIR (lib/train/checkpoint_saver.py); a folder holding a checkpoint holds a run
RUN_OUTPUTS = ("best.pt", "last.pt", "history.csv", "summary.json", "curves.png")
CHECKPOINTS = ("best.pt", "last.pt")
# constants that name a file a run reads: never one of its outputs
INPUT_CONSTANTS = ("TEACHER_CHECKPOINT", "ENCODER_WEIGHTS")


def output_dir_of(constants: dict, model_name: str) -> Path:
    """OUTPUT_DIR, or runs/<model name lowercased> when it is None or empty."""
    return Path(constants.get("OUTPUT_DIR") or f"runs/{model_name.lower()}")


def make_output_dir(output_dir: Path) -> bool:
    """Create OUTPUT_DIR (and its parents); True where this call created it."""
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"OUTPUT_DIR {output_dir}: is a file, not a folder; choose another OUTPUT_DIR")
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"OUTPUT_DIR {output_dir}: cannot be created ({os_error_text(error)})") from None
    return created


def read_holder(fd: int) -> dict:
    """What a lock file says of its holder ({} if empty or unreadable)."""
    try:
        return json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    return (f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}, "
            f"command: {holder.get('command', '?')}")


def write_holder(fd: int, holder: dict) -> None:
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


class RunLock:
    """The lock on one output folder; `acquire` refuses a folder another live process holds."""

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.fd: int | None = None
        self.created_dir = False
        self.previous: dict = {}  # the holder of a stale lock this run took over

    def acquire(self) -> "RunLock":
        self.created_dir = make_output_dir(self.output_dir)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise OutputError(f"OUTPUT_DIR {self.output_dir}: cannot be written ({os_error_text(error)}, "
                                  f"creating {LOCK_NAME}); choose another OUTPUT_DIR") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process
                holder = read_holder(fd)
                os.close(fd)
                raise OutputError(f"OUTPUT_DIR {self.output_dir} is in use by another run ({describe_holder(holder)}); "
                                  f"wait until it ends, or choose another OUTPUT_DIR") from None
            # the holder we waited for may have removed the file before we locked it: lock the one in place
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd
        self.previous = read_holder(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "command": shlex.join(["python", *sys.argv])}
        try:
            write_holder(fd, holder)
        except OSError as error:
            self.release()
            raise OutputError(f"OUTPUT_DIR {self.output_dir}: cannot be written ({os_error_text(error)}, "
                              f"writing {LOCK_NAME}); choose another OUTPUT_DIR or free space") from None
        return self

    def release(self) -> None:
        """Remove the lock file, then unlock; a folder this run created and left empty is removed too."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)  # closing drops the flock
        self.fd = None
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.output_dir.rmdir()  # only if empty: a run that failed before writing anything


@contextlib.contextmanager
def hold_output_dir(output_dir: Path | str, log=print, enabled: bool = True):
    """Hold OUTPUT_DIR for the block (see the module docstring); a no-op where `enabled` is False."""
    if not enabled:
        yield None
        return
    lock = RunLock(output_dir).acquire()
    if lock.previous:
        log(f"took over the stale lock {lock.path} of a run that is no longer running ({describe_holder(lock.previous)})")
    try:
        yield lock
    finally:
        lock.release()


def check_inputs_are_not_outputs(output_dir: Path, constants: dict) -> None:
    """A file the run reads (the teacher, the encoder weights) is never one of the files it writes, even
    with OVERWRITE=1: the run would replace its own input (kd.py OUTPUT_DIR = the teacher's folder)."""
    for name in INPUT_CONSTANTS:
        value = constants.get(name)
        if not isinstance(value, (str, Path)) or not str(value).strip():
            continue
        for output in RUN_OUTPUTS:
            if same_file(Path(value), output_dir / output):
                raise ConfigError(f"{name} {value} is the {output} this run would write into OUTPUT_DIR {output_dir}; "
                                  f"choose another OUTPUT_DIR (a run never replaces a file it reads)")


def check_no_finished_run(output_dir: Path, constants: dict, log=print) -> None:
    """A new run (no RESUME) into a folder that holds a run's checkpoints would replace them: refused unless
    OVERWRITE=1, which removes that run's outputs first (so no file of it is left beside the new run's)."""
    found = [name for name in CHECKPOINTS if (output_dir / name).exists()]
    if not found:
        return
    resume, overwrite = bool(constants.get("RESUME")), bool(constants.get("OVERWRITE"))
    if resume and overwrite:
        raise ConfigError("RESUME=1 and OVERWRITE=1 contradict each other: RESUME continues the run in "
                          f"OUTPUT_DIR {output_dir}, OVERWRITE replaces it; set one")
    if resume:
        return
    if not overwrite:
        raise OutputError(f"OUTPUT_DIR {output_dir} holds a run ({', '.join(found)}); a new run would replace it. "
                          f"Continue it with RESUME=1, replace it with OVERWRITE=1, or choose another OUTPUT_DIR")
    removed = []
    for name in RUN_OUTPUTS:
        try:
            (output_dir / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise OutputError(f"OUTPUT_DIR {output_dir}: cannot remove the previous {name} for OVERWRITE=1 "
                              f"({os_error_text(error)})") from None
    log(f"OVERWRITE=1: removed the previous run's {', '.join(removed)} from {output_dir}")


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def holds_output_dir(train):
    """Decorator for the engine's `train(constants, model_name, ...)`: the run holds its OUTPUT_DIR, which
    must not hold another run's checkpoints (unless RESUME or OVERWRITE) nor be where its inputs are."""
    @functools.wraps(train)
    def locked(constants: dict, model_name: str, *args, **kwargs):
        output_dir = output_dir_of(constants, model_name)
        main = is_main_process()
        if main:
            check_inputs_are_not_outputs(output_dir, constants)
        with sigterm_as_ctrl_c(), hold_output_dir(output_dir, enabled=main):
            if main:
                check_no_finished_run(output_dir, constants)
            return train(constants, model_name, *args, **kwargs)
    return locked
