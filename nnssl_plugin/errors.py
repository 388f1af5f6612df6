"""User-facing errors: one line that says what was expected, what was found, and the fix."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class NnsslError(Exception):
    """A problem with the user's input or environment. The CLIs print its message as one line and exit 1."""


def cli_entry(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Wrap a CLI `main`: an `NnsslError` becomes `<prog>: error: <message>` on stderr and exit code 1."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                code = main(argv)
            except NnsslError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            return 0 if code is None else code

        return run

    return wrap
