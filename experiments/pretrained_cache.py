"""Train-once, load-many: the cache of pretrained weights the examples share (torch and Keras alike).

Nothing is downloaded and no binary is committed: the first trial that needs a model trains it and
saves the weights under ``$AUP_CACHE`` (default ``~/.cache/aup``); later trials load them.  A file
lock makes parallel trials wait for one training instead of racing, and the file appears under its
name only once it is complete.  Framework-free, so the Keras examples never import torch.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    """Where the pretrained weights live (``AUP_CACHE`` or ``~/.cache/aup``)."""
    return Path(os.environ.get("AUP_CACHE", Path.home() / ".cache" / "aup"))


def train_once(cache_name: str, train_and_save: Callable[[Path], None]) -> Path:
    """The path of ``cache_name``, calling ``train_and_save(tmp_path)`` first if nobody has yet."""
    path = cache_dir() / cache_name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and load
        if not path.exists():
            tmp = path.parent / f"tmp-{os.getpid()}-{path.name}"  # keeps the suffix Keras requires
            train_and_save(tmp)
            os.replace(tmp, path)
    return path
