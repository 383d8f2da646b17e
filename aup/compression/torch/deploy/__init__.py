"""Deployment through ONNX Runtime: export, per-layer quantization, the runtime session, measured metrics.

``settings`` holds what a compressor asks for (DeploySettings) and the public ``load_deployed``."""
from __future__ import annotations

from aup.compression.torch.deploy.settings import DeploySettings, load_deployed

__all__ = ['DeploySettings', 'load_deployed']
