"""Where libraries that write a cache on import (ONNX Runtime, Keras, matplotlib) put it: aup's own folder.

``.aup/cache`` under the working directory when ``.aup`` exists there (a run's folder), else
``aup-cache`` in the temp dir; never the user's home. Imports nothing of aup's, so any layer can call it before importing
the library.
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["aup_cache_dir"]


def aup_cache_dir(*parts: str) -> str:
    """The cache folder (not created), with ``parts`` joined below it."""
    local = os.path.join(os.getcwd(), ".aup")
    base = os.path.join(local, "cache") if os.path.isdir(local) else os.path.join(tempfile.gettempdir(), "aup-cache")
    return os.path.join(base, *parts)
