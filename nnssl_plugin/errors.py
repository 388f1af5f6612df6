"""User-facing errors: one line that says what was expected, what was found, and the fix."""
from __future__ import annotations

import errno
import functools
import sys
from typing import Callable

# OSErrors whose fix lies outside the program (disk, quota, permissions): what to tell the user
_FIXABLE_OS_ERRORS = {
    errno.ENOSPC: "no space left on device; free space and rerun",
    errno.EDQUOT: "disk quota exceeded; free space (or raise the quota) and rerun",
    errno.EROFS: "read-only file system; point the nnU-Net folder variables at a writable location and rerun",
    errno.EACCES: "permission denied; fix the permissions or point the nnU-Net folder variables elsewhere and rerun",
    errno.EPERM: "operation not permitted; fix the permissions or point the nnU-Net folder variables elsewhere and "
                 "rerun",
}


class NnsslError(Exception):
    """A problem with the user's input or environment. The CLIs print its message as one line and exit 1."""


class BadArgument(NnsslError):
    """A library function's argument `parameter` (its keyword name) is invalid; `problem` says why and how to fix it.
    The message names the keyword; a command that maps keywords to its flags re-raises with the flag
    (`for_flag`), so the library never names command-line flags."""

    def __init__(self, parameter: str, problem: str):
        super().__init__(f"{parameter} {problem}")
        self.parameter, self.problem = parameter, problem

    def for_flag(self, flag: str) -> NnsslError:
        return NnsslError(f"{flag} {self.problem}")


def os_error_message(error: OSError, written: object = None) -> str | None:
    """One line for an OSError the user fixes outside the program (full disk, quota, read-only file system,
    permissions) naming the file (`written`, the file being written, else the error's own file name); None for any
    other OSError."""
    fix = _FIXABLE_OS_ERRORS.get(error.errno)
    if fix is None:
        return None
    if written is not None:
        return f"cannot write {written}: {fix}"
    return f"{error.filename}: {fix}" if error.filename is not None else fix


def cli_entry(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Wrap a CLI `main`: an `NnsslError`, or an OSError such as a full disk (`os_error_message`), becomes
    `<prog>: error: <message>` on stderr and exit code 1."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                code = main(argv)
            except NnsslError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return 1
            except OSError as e:
                message = os_error_message(e)
                if message is None:
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            return 0 if code is None else code

        return run

    return wrap
