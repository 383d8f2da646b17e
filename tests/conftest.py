"""Shared test settings.

Torch is pinned to one thread for modules that use it: the models are tiny (threads cost more than
they give), CI has two cores, and timings stay stable. Modules that never import torch are left
alone, so tests that check ``import aup`` stays torch-free are not affected.
"""
from __future__ import annotations

import sys
from typing import Iterator

import pytest

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
