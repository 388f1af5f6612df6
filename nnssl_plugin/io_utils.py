"""Writing without leaving half-written files: temp file or folder, then an atomic rename."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from nnssl_plugin.disk_space import SPACE_ERRNOS, RecordingFile, diagnose, space_error, space_message
from nnssl_plugin.errors import NnsslError, os_error_message


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], needed: int | None = None) -> None:
    """Call `write` on a temp file in the same folder, fsync, then rename over `path`: readers never see half a
    file, and an interrupted write leaves the old file (if any) as it was. A full disk, quota or file-size limit
    raises NnsslError naming the folder, its free space and the space needed (`needed` bytes if the caller knows,
    else what was written; `disk_space`), also when the writer hid the OSError (torch.save's RuntimeError); a
    read-only file system or a missing permission raises NnsslError naming `path` (`os_error_message`). The temp
    file is removed."""
    path = Path(path)
    failed: dict = {}
    try:
        _write_and_rename(path, write, needed, failed)
    except OSError as e:
        if e.errno in SPACE_ERRNOS:
            raise NnsslError(space_message(path, e, needed, failed.get("written"))) from e
        message = os_error_message(e, path)
        if message is None:
            raise
        raise NnsslError(message) from e
    except NnsslError:
        raise
    except Exception as e:
        found = space_error(e) or failed.get("recorded") or failed.get("diagnosed")
        if found is None:
            raise
        raise NnsslError(space_message(path, found, needed, failed.get("written"))) from e


def _write_and_rename(path: Path, write: Callable[[BinaryIO], None], needed: int | None, failed: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{process_tag()}.", suffix=".tmp", dir=path.parent)
    recording = None
    try:
        settle_permissions(fd, path)  # mkstemp creates 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            recording = RecordingFile(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException:
        # what the failure tells about space, read before the temp file is removed (which frees it again)
        failed["recorded"] = recording.error if recording is not None and space_error(recording.error) else None
        try:
            failed["written"] = os.path.getsize(tmp)
        except OSError:
            pass
        failed["diagnosed"] = diagnose(path, max(needed or 0, failed.get("written") or 0, 1 << 20))
        Path(tmp).unlink(missing_ok=True)
        raise


def process_tag() -> str:
    """`<host>~<pid>`: marks the temp files of this process, so that each process removes only its own (and those
    of a dead process on this host, `owned_or_orphaned`), never another live process's."""
    return f"{socket.gethostname()}~{os.getpid()}"


def owned_or_orphaned(temp_name: str) -> bool:
    """Whether a temp file named by `process_tag` belongs to this process or to a process of this host that is no
    longer running (a SIGKILLed write). Names without a tag (another program's) are never claimed."""
    match = re.search(rf"\.{re.escape(socket.gethostname())}~(\d+)\.", temp_name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def current_umask() -> int:
    """The process umask, read from /proc where possible (setting it to read it back is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def settle_permissions(fd: int, path: str | os.PathLike) -> None:
    """Give the open temp file `fd` the permissions `path` should end with once the temp file is renamed onto it:
    the mode (and, where allowed, the group) of the file it replaces, or for a new file what `open` would give it
    (0666 minus the umask), so colleagues who could read a shared dataset still can."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        os.fchmod(fd, 0o666 & ~current_umask())
        return
    if old.st_gid != os.fstat(fd).st_gid:
        try:
            os.fchown(fd, -1, old.st_gid)
        except OSError:  # not a member of that group: the mode is still kept
            pass
    os.fchmod(fd, stat.S_IMODE(old.st_mode))


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (the directory entry itself is flushed); a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=4, sort_keys=False).encode()
    atomic_write(path, lambda f: f.write(text), needed=len(text))


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def staging_folder(final: Path) -> Path:
    """A fresh, empty sibling folder to build `final` in; `publish_folder` moves it into place."""
    staging = final.with_name(f".{final.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish_folder(staging: Path, final: Path) -> None:
    """Replace `final` by the completed `staging` folder (old content removed only once the new one is whole)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)
