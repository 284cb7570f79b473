"""The output directory of a training run: created, locked, checked and cleaned before the first step.

    guard = OutDir("out").open(min_free_bytes=2 * ckpt_bytes)   # one-line ValueError on any problem
    ...                                                          # train, writing out/ckpt.npz, out/best.npz
    guard.lost(iteration)                                        # before each write: None while it is ours
    guard.close()                                                # removes out/.lock

open() creates the directory, takes the lock file OUT/.lock (holding "PID HOST"; a second run refuses naming
the holder's PID, a lock left by a process that no longer runs is taken over), which also proves the
directory writable before any work, removes the temporary files a killed save left behind
(.ckpt.npz.<hex>.tmp), and checks the free disk space.  Guide: docs/training.md
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

LOCK_NAME = ".lock"
# atomic_write's temporary files: ".<name>.<12 hex digits>.tmp" (npgpt/atomic.py)
TEMP_FILE = re.compile(r"^\.[^/]+\.[0-9a-f]{12}\.tmp$")


CHECKPOINT_NAME = "ckpt.npz"  # the latest state, what resume continues from
BEST_NAME = "best.npz"  # the state with the lowest validation loss; never overwritten by a worse one
PLOT_NAME = "loss"  # out_dir/loss.png, or loss.svg without matplotlib
EXPERT_PLOT_NAME = "expert_load.svg"  # --arch moe: each expert's share of the routed tokens per step
HF_DIR_NAME = "hf"  # out_dir/hf: with a BPE tokenizer, the final model as a Hugging Face directory

class OutDir:
    """One run's hold on its output directory; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path / LOCK_NAME
        self.held = False
        self.took_over: int | None = None  # PID of the dead run whose stale lock was taken over
        self.removed: list[str] = []  # leftover temporary files removed at open
        self.lock_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the lock file this run created

    def open(self, min_free_bytes: int = 0) -> OutDir:
        """Create, lock, clean and check the directory; a one-line ValueError naming the path on failure."""
        self._create()
        self._lock()
        try:
            self._clean()
            self._check_space(min_free_bytes)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self.held:
            self.held = False
            try:
                if _read_lock(self.lock_path) == (os.getpid(), socket.gethostname()):
                    os.unlink(self.lock_path)
            except OSError:
                pass

    def lost(self, iteration: int) -> str | None:
        """None while this run still holds the directory; else the one-line reason to stop without saving (the
        directory was deleted, or its lock file was deleted or is another run's), for a stop at `iteration`.
        Checked before every write, so a run never recreates a deleted directory or writes into one that a
        second run has taken meanwhile."""
        if not self.held:
            return None
        stop = f"stopped at iteration {iteration} without saving"
        if not self.path.is_dir():
            return f"{self.path}: the output directory was deleted during the run: {stop} (nothing is written " \
                   f"anywhere else)"
        try:
            st = os.stat(self.lock_path)
        except FileNotFoundError:
            return f"{self.lock_path}: the run's lock file was deleted during the run: {stop}, since another run " \
                   f"may now use {self.path}"
        except OSError as e:
            return f"{describe_os_error(e, self.lock_path)}: {stop}"
        holder = _read_lock(self.lock_path)
        if (st.st_dev, st.st_ino) == self.lock_id and holder == (os.getpid(), socket.gethostname()):
            return None
        who = f" (PID {holder[0]})" if holder is not None else ""
        return f"{self.lock_path}: the run's lock file now belongs to another run{who}: {stop}, so that two runs " \
               f"never share {self.path}"

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"{p}: exists and is not a directory; choose another out_dir (--out-dir)")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{describe_os_error(e, p)}; choose another out_dir (--out-dir)") from None

    def busy(self) -> str | None:
        """The error for a directory another live run has locked, else None (no lock, or a stale one)."""
        holder = _read_lock(self.lock_path)
        if holder is None or not _alive(*holder):
            return None
        pid, host = holder
        where = "" if host == socket.gethostname() else f" on host {host}"
        return (f"{self.path}: in use by another training run (PID {pid}{where}; lock file {self.lock_path}); "
                f"wait for it to finish, or use another out_dir (--out-dir)")

    def _lock(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            tmp = self.path / f".lock.{secrets.token_hex(6)}.tmp"
            try:
                tmp.write_text(me, encoding="utf-8")
            except OSError as e:
                raise ValueError(f"{self.path}: not writable ({e.strerror or e}); choose another out_dir "
                                 f"(--out-dir)") from None
            try:
                os.link(tmp, self.lock_path)  # atomic: fails if the lock exists, and it is never half-written
                st = os.stat(self.lock_path)
                self.held, self.lock_id = True, (st.st_dev, st.st_ino)
                return
            except FileExistsError:
                pass
            except OSError as e:
                raise ValueError(describe_os_error(e, self.lock_path)) from None
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            busy = self.busy()
            if busy is not None:
                raise ValueError(busy)
            holder = _read_lock(self.lock_path)
            # stale: its process is gone (or the file is unreadable); take it over
            self.took_over = holder[0] if holder is not None else -1
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ValueError(describe_os_error(e, self.lock_path)) from None
        raise ValueError(f"{self.lock_path}: could not take the lock (another run keeps taking it)")

    def _clean(self) -> None:
        for entry in sorted(os.listdir(self.path)):
            if TEMP_FILE.match(entry) and not entry.startswith(".lock."):
                try:
                    os.unlink(self.path / entry)
                    self.removed.append(entry)
                except OSError:
                    pass

    def _check_space(self, need: int) -> None:
        if need <= 0:
            return
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < need:
            raise ValueError(f"{self.path}: not enough free disk space for the checkpoints (needs about "
                             f"{format_bytes(need)}, {format_bytes(free)} free); free some space or choose "
                             f"another out_dir (--out-dir)")


def _read_lock(path: Path) -> tuple[int, str] | None:
    try:
        parts = path.read_text(encoding="utf-8").split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else "")
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _alive(pid: int, host: str) -> bool:
    if host and host != socket.gethostname():
        return True  # cannot see another machine's processes: assume it runs
    if pid == os.getpid():
        return False  # our own leftover (a PID reused in a container): not another run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def describe_os_error(e: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line: the path (the error's own, else `path`) and the error in plain words."""
    where = e.filename if e.filename is not None else path
    plain = {errno.ENOSPC: "no space left on the device (disk full)", errno.EDQUOT: "disk quota exceeded",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EROFS: "read-only file system", errno.EEXIST: "already exists",
             errno.ENOTDIR: "a part of the path is not a directory", errno.ENOENT: "no such file or directory",
             errno.EISDIR: "is a directory"}
    text = plain.get(e.errno or -1) or (e.strerror or str(e)).strip()
    return f"{where}: {text}" if where is not None else text


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
