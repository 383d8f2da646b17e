"""Editing the JSON description inside a real artifact file, as an attacker or a damaged disk would:
the artifact-safety tests share it."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable


def rewrite_description(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``edit`` to the artifact's description (the ``aup`` entry of the safetensors header) and
    write the file back with its tensors untouched."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    doc = json.loads(header["__metadata__"]["aup"])
    edit(doc)
    header["__metadata__"]["aup"] = json.dumps(doc)
    new = json.dumps(header).encode()
    new += b" " * ((-len(new)) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + size:])
