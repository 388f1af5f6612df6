"""Writing without leaving half-written files: temp file or folder, then an atomic rename."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from nnssl_plugin.errors import NnsslError, os_error_message


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temp file in the same folder, fsync, then rename over `path`: readers never see half a
    file, and an interrupted write leaves the old file (if any) as it was. A full disk, a read-only file system or a
    missing permission raises NnsslError naming `path` (`os_error_message`); the temp file is removed."""
    path = Path(path)
    try:
        _write_and_rename(path, write)
    except OSError as e:
        message = os_error_message(e, path)
        if message is None:
            raise
        raise NnsslError(message) from e
    except Exception as e:
        # torch.save through a buffered file can turn ENOSPC into a RuntimeError without the errno
        if not _nearly_full(path.parent):
            raise
        raise NnsslError(os_error_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)) from e


def _write_and_rename(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        settle_permissions(fd, path)  # mkstemp creates 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _nearly_full(folder: Path) -> bool:
    """Less than 1 MiB free where `folder` lives (False where that cannot be read)."""
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


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
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=4, sort_keys=False).encode()))


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
