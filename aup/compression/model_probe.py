"""``python -m aup.compression.model_probe module:callable``: the layers of a user's model, as JSON.

Run by :mod:`aup.compression.model_check` in a child process (in the experiment's working
directory), so that the runner never imports torch or the user's code. The callable is called
without arguments and must return the model (random weights are fine: only names and layer types
are read). Prints ``[[name, type], ...]``: ``named_modules()`` for torch, the (nested) layers for
Keras. Exit status 2 with one line on stderr when the model cannot be built.
"""
from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def build(reference: str) -> Any:
    """Import ``module`` and call ``callable`` (dotted attributes allowed) with no arguments."""
    module_name, _, attribute = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target()


def layers(model: Any) -> list[list[str]]:
    """``[[name, class name], ...]`` of every submodule (torch) or layer (Keras), root excluded."""
    if hasattr(model, "named_modules"):
        return [[name, type(module).__name__] for name, module in model.named_modules() if name]
    if hasattr(model, "layers"):
        out: list[list[str]] = []
        stack = list(model.layers)
        while stack:
            layer = stack.pop(0)
            out.append([layer.name, type(layer).__name__])
            stack[:0] = list(getattr(layer, "layers", []) or [])
        return out
    raise TypeError(f"expected a torch.nn.Module or a Keras model, got {type(model).__name__}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aup.compression.model_probe module:callable", file=sys.stderr)
        return 2
    sys.path.insert(0, "")  # the working directory (the child runs there)
    try:
        found = layers(build(argv[0]))
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported as one line
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
