"""Fixtures the compression tests share: the digits data, ONE pretrained digits model, NNI's test model
and the ``cfg`` job-config helper.

The digits model (``zoo.DigitsCNN(width=8)``) is trained once per session (4 epochs of Adam on
scikit-learn's bundled digits); tests get a fresh copy so none can leak its pruning into another. Tests
that use it train or fine-tune, so they are marked ``slow``.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, NamedTuple

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from aup.compression import catalog  # noqa: E402
from aup.compression.torch import zoo  # noqa: E402


WIDTH = 8  # channels of the pretrained DigitsCNN's first conv (the second has twice as many)


class NNITestModel(nn.Module):
    """NNI 2.0's TorchModel from its compressor tests: conv1 has 5 filters of 1x5x5 (25 weights),
    conv2 10 filters of 5x5x5 (125); the activations are named modules so outputs can be quantized."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 5, 5, 1)
        self.bn1 = nn.BatchNorm2d(5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(5, 10, 5, 1)
        self.bn2 = nn.BatchNorm2d(10)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(4 * 4 * 10, 100)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.bn1(self.conv1(x))), 2, 2)
        x = F.max_pool2d(self.relu2(self.bn2(self.conv2(x))), 2, 2)
        x = self.relu3(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class Pretrained(NamedTuple):
    """The session's trained digits CNN: its weights, the data it saw and its test accuracy."""

    state: dict[str, torch.Tensor]
    data: zoo.DigitsData
    accuracy: float

    def model(self) -> nn.Module:
        """A fresh DigitsCNN(width=8) holding the trained weights."""
        model = zoo.DigitsCNN(width=WIDTH)
        model.load_state_dict(self.state)
        return model


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
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model = zoo.DigitsCNN(width=WIDTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(4):
        zoo.train_epoch(model, digits_data.x_train, digits_data.y_train, optimizer, seed=epoch)
    torch.set_num_threads(previous)
    accuracy = zoo.evaluate(model, digits_data.x_test, digits_data.y_test)
    return Pretrained(copy.deepcopy(model.state_dict()), digits_data, accuracy)


@pytest.fixture
def make_nni_model() -> Callable[[], NNITestModel]:
    """Factory of NNI's test model (tests often need two identical instances)."""
    return NNITestModel


def job_config(name: str, config_list: list[dict[str, Any]], ctype: str | None = None,
               framework: str = "torch") -> dict[str, Any]:
    """The job config a trial would receive for compressor ``name`` (its type from the catalog)."""
    if ctype is None:
        ctype = next(e.compression_type for e in catalog.entries(framework) if e.name == name)
    return {"compression_framework": framework, "compression_type": ctype, "compressor": name,
            "config_list": config_list}


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
