"""One pretraining process per run folder: a lock file held by the process that started the run (global rank 0).

`nnssl_pretrain` takes the lock (`.nnssl_run.lock` in the run's `fold_all`) before it writes anything there; a
second `nnssl_pretrain` on the same run refuses in one line naming the holder (host, pid) and when it last wrote.
The holder refreshes the lock after every epoch (`heartbeat`, with that epoch's duration) and removes it when it
ends. A lock left behind (SIGKILL, OOM killer, a lost node) is taken over:
- on the same host, when its process is gone (the pid is not running, or runs another program: its start time
  differs);
- from another host (a job requeued on another node, sharing the file system), once the lock has not been refreshed
  for `STALE_EPOCHS` epochs' time (the duration the holder last recorded; `STALE_BEFORE_FIRST_EPOCH_S` before its
  first epoch), or at once with `--take-over-lock` (the refusal names the flag).

The lock is a small JSON file written atomically (temp file + rename); it is created with O_EXCL, so of two
processes starting together exactly one gets it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from nnssl_plugin.errors import NnsslError

LOCK_NAME = ".nnssl_run.lock"
STALE_EPOCHS = 3
STALE_BEFORE_FIRST_EPOCH_S = 1800.0
TAKE_OVER_FLAG = "--take-over-lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    """Whether `pid` still runs the process that wrote the lock (its start time matches where it can be read)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _process_start(pid)
    return start is None or now is None or now == start


@dataclass
class Holder:
    host: str
    pid: int
    start: str | None
    written: float  # time.time() of the last write (start or heartbeat)
    epoch_seconds: float | None

    def describe(self) -> str:
        ago = max(0.0, time.time() - self.written)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.written))
        return f"host {self.host}, pid {self.pid}, last wrote {when} ({_duration(ago)} ago)"

    def stale_after(self) -> float:
        return STALE_EPOCHS * self.epoch_seconds if self.epoch_seconds else STALE_BEFORE_FIRST_EPOCH_S


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _record(epoch_seconds: float | None = None, pid: int | None = None) -> dict:
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "written": time.time(),
            "epoch_seconds": epoch_seconds}


def read_holder(folder: str | os.PathLike) -> Holder | None:
    """The lock's holder, or None when there is no lock (an unreadable lock counts as one from an unknown host)."""
    return read_holder_file(Path(folder) / LOCK_NAME)


def read_holder_file(path: Path) -> Holder | None:
    try:
        record = json.loads(path.read_text())
        return Holder(str(record["host"]), int(record["pid"]), record.get("start"), float(record["written"]),
                      record.get("epoch_seconds"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            written = path.stat().st_mtime
        except OSError:
            return None
        return Holder("unknown", -1, None, written, None)


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _why_held(holder: Holder) -> str | None:
    """None when `holder`'s lock may be taken over, else why not."""
    if holder.host == socket.gethostname():
        return "running" if holder.pid > 0 and _alive(holder.pid, holder.start) else None
    age = time.time() - holder.written
    return None if age > holder.stale_after() else "another host"


def acquire(folder: str | os.PathLike, take_over: bool = False, log=print) -> None:
    """Take the run folder's lock for this process, or raise NnsslError naming the process that holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_holder(folder)
            if holder is None:
                continue  # removed in between: try again
            if holder.host == socket.gethostname() and holder.pid == os.getpid():
                return
            why = _why_held(holder)
            if why == "running":
                raise NnsslError(f"{folder} is being trained by another process ({holder.describe()}); wait for "
                                 f"it to end or stop it, then resume with --c")
            if why is not None and not take_over:
                raise NnsslError(
                    f"{folder} is locked by a run on another host ({holder.describe()}; taken over once "
                    f"{_duration(holder.stale_after())} without a write, {STALE_EPOCHS} epochs' time); if that "
                    f"run is gone (a requeued job), pass {TAKE_OVER_FLAG} with --c")
            if _set_aside(path, holder):
                log(f"taking over the lock of a run that is gone ({holder.describe()})")
            continue  # create it anew with O_EXCL: of two processes taking over together, one gets it
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(_record()))
        return
    raise NnsslError(f"could not take the lock {path}: other processes keep taking it; run one nnssl_pretrain per "
                     f"run folder")


def _set_aside(path: Path, holder: Holder) -> bool:
    """Remove the stale lock of `holder` (rename, then check it was that lock: a rename is atomic, so of two
    processes only one moves it, and a fresh lock moved by mistake is put back)."""
    aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.old")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_holder_file(aside)
    if moved is not None and (moved.host, moved.pid, moved.written) != (holder.host, holder.pid, holder.written):
        try:
            os.link(aside, path)  # put the fresh lock back, unless yet another one was created meanwhile
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)
    return True


def heartbeat(folder: str | os.PathLike, epoch_seconds: float | None) -> None:
    """Refresh the lock after an epoch (with its duration), if this process or its parent (DDP's rank 0 is a child
    of the process that took the lock) holds it; nothing otherwise (a run started by nnU-Net's own entry)."""
    holder = read_holder(folder)
    if holder is None or holder.host != socket.gethostname() or holder.pid not in (os.getpid(), os.getppid()):
        return
    record = _record(epoch_seconds, holder.pid)
    record["start"] = holder.start
    try:
        _write(Path(folder) / LOCK_NAME, record)
    except OSError:
        pass  # a full disk is reported by the checkpoint write; the lock keeps its last time


def release(folder: str | os.PathLike) -> None:
    """Remove the lock if this process holds it."""
    holder = read_holder(folder)
    if holder is not None and holder.host == socket.gethostname() and holder.pid == os.getpid():
        (Path(folder) / LOCK_NAME).unlink(missing_ok=True)
