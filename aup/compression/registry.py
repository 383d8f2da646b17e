"""Compressor names -> classes, read from :mod:`aup.compression.catalog` (torch-free).

The experiment validator resolves compressor names before any trial runs, so this module must not
import torch or tensorflow: classes are imported only by :func:`load_class`.
"""
from __future__ import annotations

import importlib

import aup.compression.catalog as catalog
from aup.compression.catalog import FRAMEWORK_ALIASES, Entry, canonical_framework, find_types

__all__ = ["COMPRESSORS", "FRAMEWORK_ALIASES", "resolve", "canonical_framework", "find", "load_class",
           "import_entry"]

# {framework: {type: {name: "module:Class"}}}, a read-only view of the catalog for listings
COMPRESSORS: dict[str, dict[str, dict[str, str]]] = {
    fw: {ty: {e.name: e.class_path for e in catalog.entries(fw, ty)} for ty in catalog.types_of(fw)}
    for fw in catalog.frameworks()
}


def resolve(framework: str, compression_type: str, name: str) -> str:
    """Return the ``"module:Class"`` path of a compressor, or raise ValueError listing what exists."""
    return catalog.lookup(framework, compression_type, name).class_path


def find(name: str) -> list[tuple[str, str]]:
    """All ``(framework, type)`` pairs that define a compressor called ``name``."""
    return find_types(name)


def load_class(framework: str, compression_type: str, name: str) -> type:
    """Import and return the compressor class; a missing module gives a clear ValueError."""
    return import_entry(catalog.lookup(framework, compression_type, name))


def import_entry(entry: Entry) -> type:
    """The class an entry names; a module or class missing from this build is a one-line ValueError."""
    module_name, class_name = entry.module, entry.class_name
    where = f"compressor {entry.name!r} ({entry.framework} {entry.compression_type})"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(f"{where} is not implemented yet in this build (module {module_name} is missing)") from exc
        raise ValueError(
            f"compressor {entry.name!r} needs the package {exc.name!r}, which is not installed "
            f"(pip install it, e.g. the matching aup extra)"
        ) from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"{where} is not implemented yet in this build ({module_name} has no {class_name})") from None
