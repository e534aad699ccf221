"""One run per output folder: every ``smug`` command that writes a folder holds an exclusive lock on
``<output-dir>/.smug-evaluate.lock`` (one name for all commands, so that no two of them share a folder).

Two runs appending to one ``records.jsonl`` would record units twice, or units of two seeds under one label. The
lock is the kernel's ``fcntl.flock`` on the lock file, so it is released when its process ends, however it ends; the
file names its owner (pid, host, start time) for the error of a second run. A lock file left behind by a killed run
is stale: unlocked, naming a process of this host that has ended; the next run takes it over with a warning. One that
names another host is refused, because flock need not reach across hosts on a network file system, so that run may
still be writing; so is one whose owner still runs, in case the file system's locks do not work.
"""

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

LOCK = ".smug-evaluate.lock"
OWNER_READ_TRIES = 20  # a run that has just taken the lock may not have written its name yet
logger = logging.getLogger(__name__)


class OutputDirLocked(FileExistsError):
    """The output folder is (or may be) written by another run, or its lock file cannot be made."""


@dataclass(frozen=True)
class LockOwner:
    """The run that holds an output folder's lock."""

    pid: int
    host: str
    started: str
    command: str = ""  # lock files of earlier versions do not name it

    @classmethod
    def this_process(cls, command: str = "") -> "LockOwner":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), command)

    @classmethod
    def parse(cls, text: bytes) -> "LockOwner | None":
        """The owner a lock file names; None for an empty or half-written file."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None

    def __str__(self) -> str:
        what = f"{self.command}, " if self.command else ""
        return f"{what}pid {self.pid} on host {self.host}, since {self.started}"


@contextlib.contextmanager
def output_dir_lock(output_dir: pathlib.Path, command: str = "smug evaluate") -> Iterator[pathlib.Path]:
    """Hold the lock of ``output_dir`` (created if missing) inside the ``with`` block; yields the lock file.
    ``command`` (e.g. ``smug bound``) is written into the lock file, to be named in the error of a second run.

    On exit the lock file is removed and, when this call created ``output_dir`` and nothing was written into it
    (a run that failed on its inputs), so is the folder.

    Raises
    ------
    OutputDirLocked
        Another run holds the lock, the lock names a run on another host, or the lock file cannot be made.
    FileExistsError
        ``output_dir`` is a file.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} is a file, not a folder: give --output-dir a new folder or a run's.")
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK
    fd = _acquire(path, command)
    try:
        yield path
    finally:
        # Removed while still held: a run that opened this file meanwhile sees it is gone and locks a new one.
        path.unlink(missing_ok=True)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                output_dir.rmdir()


def _acquire(path: pathlib.Path, command: str) -> int:
    """Lock ``path``, take over a lock its killed owner left on this host, write this process as the owner."""
    output_dir = path.parent
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputDirLocked(
                f"Cannot create the lock file {path}: {e.strerror}; choose a writable --output-dir."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _read_owner(path)
            raise OutputDirLocked(
                f"{output_dir} is in use by another smug run ({owner or 'owner not recorded yet'}); wait "
                "for it to finish (then --resume if it was interrupted), or write into another --output-dir."
            ) from None
        except OSError as e:
            os.close(fd)
            raise OutputDirLocked(
                f"Cannot lock {path}: {e.strerror}; choose an --output-dir on a file system with file locks."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # its owner removed it between our open and our lock: lock the file that is there now
    me = LockOwner.this_process(command)
    previous = LockOwner.parse(_read(fd))
    if previous is not None and previous.host != me.host:
        os.close(fd)
        raise OutputDirLocked(
            f"{output_dir} is locked by a smug run on another host ({previous}), which cannot be checked "
            f"from {me.host}; if no run is writing into it, delete {path} and run again."
        )
    if previous is not None and previous.pid != me.pid and _running(previous.pid):
        # Unlocked, yet its owner runs: a file system whose locks do not work, or the pid was reused.
        os.close(fd)
        raise OutputDirLocked(
            f"{output_dir} is in use by another smug run ({previous}); wait for it to finish, or write "
            f"into another --output-dir; if pid {previous.pid} is no smug run, delete {path} and run again."
        )
    if previous is not None:
        logger.warning(
            "%s: taking over the lock of %s from %s, which ended without releasing it.", command, output_dir, previous
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
    os.fsync(fd)
    return fd


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _read(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _read_owner(path: pathlib.Path) -> LockOwner | None:
    for _ in range(OWNER_READ_TRIES):
        with contextlib.suppress(OSError):
            owner = LockOwner.parse(path.read_bytes())
            if owner is not None:
                return owner
        time.sleep(0.05)
    return None
