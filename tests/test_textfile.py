"""npgpt.io.textfile: a file the user named is read with a bound (issue 42, item 7).

A regular file is read whole; a pipe or FIFO in chunks up to a cap; a device (/dev/zero, which never ends) or
a socket is refused at once.  Every problem is one ValueError naming the path.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from npgpt.io.textfile import read_user_bytes

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero")


def test_a_regular_file_is_read_whole(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello\n" * 1000)
    assert read_user_bytes(tmp_path / "a.txt") == b"hello\n" * 1000


@pytest.mark.parametrize("make,expected", [
    (lambda d: d / "nope.txt", "nope.txt: no such file"),
    (lambda d: d, "is a directory, expected a text file"),
])
def test_missing_and_directory(tmp_path, make, expected):
    with pytest.raises(ValueError, match=expected):
        read_user_bytes(make(tmp_path))


@POSIX
def test_a_character_device_is_refused_at_once():
    t0 = time.time()
    with pytest.raises(ValueError, match=r"^/dev/zero: a character device, not a regular file; expected a text "
                                         r"file$"):
        read_user_bytes("/dev/zero")
    assert time.time() - t0 < 5


def _fifo_writer(path, data, repeat):
    def write():
        try:
            with open(path, "wb") as f:
                for _ in range(repeat):
                    f.write(data)
        except BrokenPipeError:  # the reader stopped at its cap
            pass
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@POSIX
def test_a_fifo_is_read_to_its_end(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = _fifo_writer(fifo, b"abc\n", 100_000)  # 400 KB: several chunks
    assert read_user_bytes(fifo) == b"abc\n" * 100_000
    t.join(timeout=10)


@POSIX
def test_a_fifo_that_does_not_end_is_cut_at_the_cap(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = _fifo_writer(fifo, b"\0" * 65536, 10_000)  # 655 MB if read to the end
    with pytest.raises(ValueError, match=r"fifo: a pipe that gave more than 1.0 MiB; save it to a regular "
                                         r"file first$"):
        read_user_bytes(fifo, limit=1 << 20)
    t.join(timeout=10)
