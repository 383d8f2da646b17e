"""Fixtures the compression tests share: the digits data, ONE pretrained digits model, NNI's test model
and the ``cfg`` job-config helper (the helpers themselves are in ``aup.testing``, for users too).

The digits model (``zoo.DigitsCNN(width=8)``) is trained once per session (4 epochs of Adam on
scikit-learn's bundled digits); tests get a fresh copy so none can leak its pruning into another. Tests
that use it train or fine-tune, so they are marked ``slow``.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

torch = pytest.importorskip("torch")

from aup.compression.torch import zoo  # noqa: E402
from aup.testing.contract import job_config  # noqa: E402
from aup.testing.data import Pretrained, train_digits_cnn  # noqa: E402
from aup.testing.models import NNITestModel  # noqa: E402


WIDTH = 8  # channels of the pretrained DigitsCNN's first conv (the second has twice as many)


@pytest.fixture(scope="session")
def digits_data() -> zoo.DigitsData:
    """scikit-learn's digits as 1x8x8 tensors, 75/25 split (seed 0)."""
    return zoo.load_digits_tensors(seed=0)


@pytest.fixture(scope="session")
def digits(digits_data: zoo.DigitsData) -> zoo.DigitsData:
    """The digits tensors (a module may narrow this name to a slice of them)."""
    return digits_data


@pytest.fixture(scope="session")
def pretrained_digits(digits_data: zoo.DigitsData) -> Pretrained:
    """The one trained digits model of the session (use ``.model()`` for a fresh copy)."""
    return train_digits_cnn(digits_data, width=WIDTH)


@pytest.fixture
def make_nni_model() -> Callable[[], NNITestModel]:
    """Factory of NNI's test model (tests often need two identical instances)."""
    return NNITestModel


@pytest.fixture
def cfg() -> Callable[..., dict[str, Any]]:
    """``cfg(name, config_list, ctype=None)``: a job config naming one compressor."""
    return job_config


@pytest.fixture
def fresh_trial_state(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Each test is its own trial: no compressors or dense baseline left over from another test, and
    ONNX Runtime's cache under the test's own folder."""
    from aup.compression.torch import base as base_module
    from aup.compression.torch.deploy import baseline as baseline_module

    monkeypatch.setattr(base_module, "_live", [])
    monkeypatch.setitem(baseline_module._state, "model", None)
    monkeypatch.setitem(baseline_module._state, "fingerprint", None)
    monkeypatch.setitem(baseline_module._state, "metrics", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
