"""Physical shrink: masked channels removed with torch-pruning's dependency graph, then checked.

``shrink_model`` is the face; ``check`` compares shrunk and masked outputs, ``report`` says what changed,
``module_state`` undoes a failed shrink."""
from __future__ import annotations

from aup.compression.torch.shrink.core import shrink_model
from aup.compression.torch.shrink.report import ShrinkError, ShrinkReport

__all__ = ['ShrinkError', 'ShrinkReport', 'shrink_model']
