"""A full disk, a quota or a file-size limit met while writing: one line naming the folder and the space needed.

Writers hide the OSError in different ways: `torch.save` through a file object raises `RuntimeError: unexpected pos
…` with the OSError only as its `__context__`; blosc2 (nnU-Net's case files) raises a RuntimeError without any
errno. So a write failure is traced four ways, in this order: an ENOSPC / EDQUOT / EFBIG OSError anywhere in the
exception's cause/context chain (`space_error`), one recorded by the file object the writer wrote to
(`RecordingFile`), or, for writers that keep no errno (blosc2), the errno of a write to the file it failed to write
(`probe_by_writing`), else the process's file-size limit or the free space of the folder below what the write
needed (`diagnose`, checked before the partial file is removed).
"""
from __future__ import annotations

import errno
import os
import resource
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from nnssl_plugin.errors import NnsslError

SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def space_error(error: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT / EFBIG OSError `error` is or carries in its __cause__/__context__ chain, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in SPACE_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def size_text(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def nbytes_of(obj: Any) -> int:
    """Bytes of the tensors and arrays in a (nested) object: what saving it needs at least."""
    if hasattr(obj, "nbytes") and not isinstance(obj, (str, bytes)):
        try:
            return int(obj.nbytes)
        except (TypeError, ValueError):
            return 0
    if isinstance(obj, dict):
        return sum(nbytes_of(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes_of(v) for v in obj)
    return 0


def space_message(path: str | os.PathLike, error: OSError, needed: int | None, written: int | None = None) -> str:
    """One line for a full disk (ENOSPC), a quota (EDQUOT) or a file-size limit (EFBIG) met writing `path`."""
    folder = Path(path).parent
    need = (f"about {size_text(needed)} needed" if needed else
            f"more than the {size_text(written)} written needed" if written else "the size of the file needed")
    if error.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        shown = "unlimited" if limit == resource.RLIM_INFINITY else size_text(limit)
        return (f"cannot write {path}: file too large for the file-size limit (ulimit -f: {shown}) or the file "
                f"system of {folder} ({need}); raise the limit or write to another file system and rerun")
    free = free_bytes(folder)
    what = "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
    return (f"cannot write {path}: {what} in {folder} ({size_text(free)} free, {need}); free space there (or point "
            f"the nnU-Net folder variable at a larger disk) and rerun")


def diagnose(path: str | os.PathLike, needed: int | None) -> OSError | None:
    """For a writer that kept no errno: an EFBIG when `needed` bytes exceed the process's file-size limit, an
    ENOSPC when they exceed the free space of `path`'s folder, else None (the failure is something else)."""
    if not needed:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and needed > limit:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    free = free_bytes(Path(path).parent)
    if free is not None and needed > free:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def probe_by_writing(path: str | os.PathLike, amount: int | None) -> OSError | None:
    """For a writer that kept no errno (blosc2): append up to `amount` bytes (at most 1 MiB, at least 4 kiB) to the
    file it failed to write and fsync, so that the file system itself says ENOSPC / EDQUOT / EFBIG; the file is
    truncated back (or removed, if the writer had not created it). Only for a file that is incomplete anyway."""
    existed = os.path.lexists(path)
    size = os.stat(path).st_size if existed and os.path.isfile(path) else None
    amount = min(max(amount or 0, 4096), 1 << 20)
    try:
        with open(path, "ab") as f:
            f.write(bytes(amount))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e if e.errno in SPACE_ERRNOS else None
    finally:
        try:
            if not existed:
                os.unlink(path)
            elif size is not None:
                os.truncate(path, size)
        except OSError:
            pass
    return None


class RecordingFile:
    """A binary file object that remembers the OSError its write raised (torch.save turns it into a RuntimeError
    and keeps it only as context, if at all)."""

    def __init__(self, f: BinaryIO):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextmanager
def full_disk_is_one_line(path: str | os.PathLike, needed: int | None = None, probe: bool = False
                          ) -> Iterator[None]:
    """Around a write of `path` (about `needed` bytes): a full disk, quota or file-size limit becomes NnsslError
    with `space_message`; any other failure propagates unchanged. `probe`: `path` is the file being written and
    incomplete if the write failed, so it may be probed by writing to it (`probe_by_writing`)."""
    try:
        yield
    except NnsslError:
        raise
    except Exception as e:  # noqa: BLE001 - writers wrap the OSError in several types
        found = space_error(e) or (probe_by_writing(path, needed) if probe else None) or diagnose(path, needed)
        if found is None:
            raise
        raise NnsslError(space_message(path, found, needed)) from e
