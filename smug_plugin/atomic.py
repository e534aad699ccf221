"""Atomic file writes: a reader (or a resumed run) never sees a half-written result.

Every file the package writes goes to a temporary name in the destination's folder and is moved into place with
``os.replace``; its mode follows the user's umask (``tempfile.mkstemp`` alone would leave 0600).
"""

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    Parameters
    ----------
    path : str or os.PathLike
        The destination file.
    suffix : str
        Suffix of the temporary name (some writers choose their format by it, e.g. ``.png``, ``.npz``).
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _umask_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
