"""Reading a file a user named, with a bound: a regular file whole, a pipe in chunks up to a cap, and
anything else that is not a regular file (a device such as /dev/zero, which never ends; a socket) refused.

    data = read_user_bytes("input.txt")             # bytes; a one-line ValueError naming the path otherwise
    data = read_user_bytes(p, what="a file")         # `what` completes "is a directory, expected ..."

A FIFO stays allowed (`npgpt train /dev/stdin < x`, `<(zcat x.gz)`): it is read MiB by MiB, so Ctrl-C
stops it, and a pipe that gives more than MAX_STREAM_BYTES is refused instead of filling the memory.
Guide: docs/training.md ("Errors").
"""

from __future__ import annotations

import os
import stat

__all__ = ["MAX_STREAM_BYTES", "read_user_bytes"]

MAX_STREAM_BYTES = 1 << 30  # a pipe is refused past 1 GiB: save such a text to a file
CHUNK = 1 << 20


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def read_user_bytes(path: str | os.PathLike[str], what: str = "a text file", limit: int = MAX_STREAM_BYTES
                    ) -> bytes:
    """The bytes of the file at path: a regular file whole, a pipe or FIFO up to `limit` bytes.  Missing, a
    directory, a device or socket, unreadable, or a pipe longer than limit: a one-line ValueError."""
    p = os.fspath(path)
    try:
        mode = os.stat(p).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ValueError(f"{p}: {_kind(mode)}, not a regular file; expected {what}")
        with open(p, "rb") as f:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return f.read()
            chunks, n = [], 0
            while chunk := f.read(min(CHUNK, limit + 1 - n)):
                chunks.append(chunk)
                n += len(chunk)
                if n > limit:
                    raise ValueError(f"{p}: a pipe that gave more than {_size(limit)}; save it to a regular file "
                                     f"first")
            return b"".join(chunks)
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, expected {what}") from None
    except OSError as e:
        if os.path.isdir(p):  # Windows says "permission denied" for a directory
            raise ValueError(f"{p}: is a directory, expected {what}") from None
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None
