"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Used for checkpoints (npgpt/checkpoint.py) and GPT-2 directories (npgpt/pretrained.py, npgpt/safetensors.py).
"""

from __future__ import annotations

import os
import secrets
from typing import BinaryIO
from collections.abc import Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call write(f) on a temporary file beside `path`, fsync it, then os.replace it over `path`.

    Readers see the old file or the new one, never a partial one; if write raises, `path` is untouched
    and the temporary file is removed.  An OSError (disk full, no permission) names `path` itself.  New
    files get the usual permissions (0o666 minus the umask).
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:  # name the file the caller asked for, not the hidden temporary one
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from None
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
