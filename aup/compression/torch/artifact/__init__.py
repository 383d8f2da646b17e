"""aup's artifact: tensors (safetensors) + a JSON description of the model, loaded without pickle.

``files`` writes and reads it, ``codec`` describes modules and graphs, ``allowlist`` is the loader's
security boundary, ``storage`` the tensor encodings (packed k-bit integers, sparse)."""
from __future__ import annotations

from aup.compression.torch.artifact.files import load_compressed, save_artifact

__all__ = ['load_compressed', 'save_artifact']
