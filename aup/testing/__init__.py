"""Helpers for testing code built on aup, the same ones aup's own tests use (docs/testing.md).

- :mod:`aup.testing.data` -- scikit-learn's bundled digits as tensors, and a digits CNN trained in
  seconds (nothing is downloaded);
- :mod:`aup.testing.models` -- the tiny reference models: NNI 2.0's test CNN, the digits CNN, a
  two-layer transformer classifier;
- :mod:`aup.testing.contract` -- the compressor contract suite: the harness that builds any
  catalog compressor with the arguments it asks for, and :func:`~aup.testing.contract.check_contract`,
  which runs a compressor through a trial's lifecycle and checks what every compressor promises.

Importing ``aup.testing`` imports nothing heavy; the submodules import torch.
"""
from __future__ import annotations

__all__ = ["data", "models", "contract"]
