"""The tool's cache folder: what it builds or traces once and keeps between runs.

    $SGDSAI_CACHE_DIR                 when set and not empty
    $XDG_CACHE_HOME/sgdsai            else, when that is set
    ~/.cache/sgdsai                   else, when the home folder exists

Its users keep their own subfolder (``kernels``: the CPU kernel of SGDSaI, ``traces``: the fake-tensor
traces). Nothing here creates a folder: a caller that writes makes its subfolder, and there is no
cache folder at all (None) where the home folder does not exist (``HOME=/nonexistent`` is never created).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path | None:
    """The cache folder (see the module docstring); None where there is none."""
    if os.environ.get("SGDSAI_CACHE_DIR"):
        return Path(os.environ["SGDSAI_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "sgdsai"
    home = os.path.expanduser("~")
    if not os.path.isdir(home):
        return None
    return Path(home) / ".cache" / "sgdsai"
