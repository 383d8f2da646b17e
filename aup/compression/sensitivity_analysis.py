"""Auptimizer's module path ``aup.compression.sensitivity_analysis`` (its utility docs and example use it).

The implementation is :mod:`aup.compression.torch.analysis`; importing this module imports torch.
"""
from aup.compression.torch.analysis import SensitivityAnalysis

__all__ = ["SensitivityAnalysis"]
