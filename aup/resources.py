"""The execution resources, one registry row each: everything aup knows about a ``"resource"``.

The experiment's ``"resource"`` names a row here. Validation (``aup.config``) reads which names
exist, which package a resource needs and which ``resource_args`` keys belong to it alone; the
trial environment (``aup.runner.trial_env``) reads how it hands out GPUs; the runner opens the
row's class (``aup.runner.contracts.ExecutionResource``) for each run. The class is named by
``"module:Class"`` and imported only when a run opens it, so this module stays at the bottom of
the layers (the config layer reads it without importing the runner, Ray or anything heavy).

Adding a resource is one class and one row (docs/architecture.md, "Adding an execution resource").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from aup.errors import UserError

#: How trials of a resource see GPUs: ``hidden`` (``CUDA_VISIBLE_DEVICES`` empty), ``pool`` (the
#: runner hands each running trial one id of ``resource_args.gpus``) or ``resource`` (the resource
#: assigns them itself, e.g. Ray from ``num_gpus``; the runner's own setting is not passed on).
Devices = Literal["hidden", "pool", "resource"]


@dataclass(frozen=True)
class ResourceRow:
    """One execution resource: its name, its class and the facts the layers above read."""

    name: str
    # the class implementing aup.runner.contracts.ExecutionResource (not imported here: the runner sits
    # above this module), as "module:Class", imported when a run opens it, or the class itself
    resource: str | type[Any]
    devices: Devices
    summary: str  # one line for messages and the documentation
    package: str | None = None  # a Python package it needs (refused with its install hint when missing)
    install: str | None = None  # how to get that package
    args: frozenset[str] = frozenset()  # resource_args keys that only this resource uses

    def resource_class(self) -> type[Any]:
        """The class of this row (``aup.runner.launcher.open_resource`` checks that it implements
        ``aup.runner.contracts.ExecutionResource``)."""
        if not isinstance(self.resource, str):
            return self.resource
        module, _, name = self.resource.partition(":")
        cls: type[Any] = getattr(importlib.import_module(module), name)
        return cls


RESOURCES: dict[str, ResourceRow] = {}


def register_resource(row: ResourceRow) -> ResourceRow:
    """Add (or replace) a resource's row; returns it."""
    RESOURCES[row.name] = row
    return row


def unregister_resource(name: str) -> None:
    """Remove a row (tests that register a toy resource put the registry back)."""
    RESOURCES.pop(name, None)


def resource_row(name: str) -> ResourceRow:
    """The row of resource ``name``; a one-line UserError naming the known ones otherwise."""
    try:
        return RESOURCES[name]
    except KeyError:
        raise UserError(f"resource: unknown resource {name!r} (known: {', '.join(sorted(RESOURCES))})") from None


def resource_only_args() -> dict[str, str]:
    """``resource_args`` key -> the one resource that uses it."""
    return {key: row.name for row in RESOURCES.values() for key in row.args}


register_resource(ResourceRow("cpu", "aup.runner.launcher:LocalResource", "hidden",
                              "local processes on this machine, no GPU visible"))
register_resource(ResourceRow("gpu", "aup.runner.launcher:LocalResource", "pool",
                              "local processes on this machine, one GPU of resource_args.gpus each"))
register_resource(ResourceRow("ray", "aup.runner.ray_launcher:RayResource", "resource",
                              "Ray tasks on a cluster's nodes (or a local Ray cluster)",
                              package="ray", install="pip install 'aup[ray]'",
                              args=frozenset({"address", "num_cpus", "num_gpus", "runtime_env"})))

__all__ = ["Devices", "RESOURCES", "ResourceRow", "register_resource", "resource_only_args", "resource_row",
           "unregister_resource"]
