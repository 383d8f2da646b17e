"""``rtn``: round-to-nearest weight-only quantization, group-wise (the baseline GPTQ/AWQ/HQQ compare to).

Every group of ``group_size`` input columns of a row is rounded to nearest on its own grid: min/max
widened to contain 0 (asymmetric) or ``+-max|w|`` (symmetric). No data needed. See
:mod:`.weight_only` for the keys and the grid layout.
"""
from __future__ import annotations

from typing import ClassVar

from aup.compression.torch.quantization.weight_only import WeightOnlyQuantizer

__all__ = ["RTNQuantizer"]


class RTNQuantizer(WeightOnlyQuantizer):
    """``RTNQuantizer(model, config_list, optimizer=None, dummy_input=None)``."""

    compressor_name: ClassVar[str] = "rtn"
