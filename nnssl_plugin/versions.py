"""The nnU-Net versions the plugin is tested with (pyproject.toml pins the same range), and a one-line warning at
import time when another version is installed: the plugin relies on nnU-Net internals, so it may still work."""
from __future__ import annotations

import logging
import re
from importlib import metadata

NNUNET_REQUIREMENT = "nnunetv2>=2.8.1,<2.9"  # the dependency line in pyproject.toml (tests/test_packaging.py)
TESTED_FROM, TESTED_BELOW = (2, 8, 1), (2, 9)  # the same range as version tuples


def _release(version: str) -> tuple[int, ...] | None:
    """The leading release numbers of a version string ('2.8.1.post1' -> (2, 8, 1)); None if there are none."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


def untested_nnunet_message(version: str | None) -> str | None:
    """One line when nnunetv2 `version` lies outside the tested range; None inside it or when not installed."""
    if version is None:
        return None
    release = _release(version)
    if release is not None and TESTED_FROM <= release < TESTED_BELOW:
        return None
    return (f"nnssl_plugin: nnunetv2 {version} is installed but the plugin is tested with {NNUNET_REQUIREMENT}; "
            f"it may still work, and if it fails: pip install '{NNUNET_REQUIREMENT}'")


def installed_nnunet_version() -> str | None:
    try:
        return metadata.version("nnunetv2")
    except metadata.PackageNotFoundError:
        return None


def warn_if_untested_nnunet() -> None:
    """Log the one-line warning (stderr without a logging set-up) if the installed nnunetv2 is untested."""
    message = untested_nnunet_message(installed_nnunet_version())
    if message is not None:
        logging.getLogger("nnssl_plugin").warning(message)
