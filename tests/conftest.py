"""Shared test settings.

Torch is pinned to one thread for modules that use it: the models are tiny (threads cost more than
they give), CI has two cores, and timings stay stable. Modules that never import torch are left
alone, so tests that check ``import aup`` stays torch-free are not affected.

Libraries write caches and settings into the home directory when they are imported or run
(onnxruntime under $XDG_CACHE_HOME, matplotlib's font cache, Chromium's config, Keras' keras.json,
the examples' pretrained models under $AUP_CACHE). The suite points all of them at one folder in the
temp dir, set before any test module imports those libraries; it persists between runs so the
pretrained digits models are trained once.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Iterator

import pytest

_TEST_HOME = os.path.join(tempfile.gettempdir(), "aup-tests-home")
for _variable, _folder in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                           ("MPLCONFIGDIR", "matplotlib"), ("KERAS_HOME", "keras"), ("AUP_CACHE", "aup-cache")):
    os.environ[_variable] = os.path.join(_TEST_HOME, _folder)

# Real PostgreSQL and Ray servers for the scale-out tests (started only by tests that ask for them).
pytest_plugins = ["fixtures_servers"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
