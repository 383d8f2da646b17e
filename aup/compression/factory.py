"""``create_compressor``: from a job config (or a ``compression`` section) to a ready compressor.

A single-stage config becomes one compressor (:func:`aup.compression.spec.build_stage`); a pipeline
config (``compression_pipeline``) becomes a :class:`~aup.compression.torch.pipeline.PipelineCompressor`
over its stages. This module stays torch-free at import time; torch is imported with the class.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

from aup.compression.allocation import JOB_KEY as ALLOCATION_JOB_KEY
from aup.compression.spec import (  # noqa: F401 - the spec API, also reachable from here
    CompressionSpec, accepted_kwargs, bind_arguments, build_stage, is_pipeline, merge_compressor_args,
    normalize_config, pipeline_stages, resolve_class,
)

__all__ = ["create_compressor", "normalize_config", "CompressionSpec"]


def create_compressor(model: Any, config: Mapping[str, Any] | Sequence[Mapping[str, Any]], *args: Any,
                      **kwargs: Any) -> Any:
    """Build the compressor that ``config`` names for ``model``.

    ``config`` is the trial's job config (``compression_framework``, ``compression_type``,
    ``compressor``, ``config_list``) or an experiment's ``compression`` section (``framework``,
    ``type``, ...). Extra arguments go to the compressor's constructor by keyword or by position,
    e.g. ``create_compressor(model, config, optimizer, dependency_aware=True, dummy_input=x)``.
    Unknown names, bad config_list entries or arguments raise ValueError naming what is wrong.

    Constructor arguments in the config's ``compressor_args`` (searched by the runner, e.g.
    ``statistics_batch_num``) are merged in; where the script passes the same argument with a
    different value, the config's value wins with a warning (the experiment is what is searched).
    A pipeline config (``compression_pipeline``) returns a compressor applying the stages in order
    (:class:`aup.compression.torch.pipeline.PipelineCompressor`); extra arguments go by keyword to
    every stage whose constructor takes them. A list of stage configs is that pipeline too
    (``create_compressor(model, [prune_stage, quant_stage])``, as the README says).
    """
    if isinstance(config, (list, tuple)):
        config = {"compression_pipeline": list(config)}
    deploy = deploy_setting(config)
    distill = distill_setting(config)
    pipeline = is_pipeline(config)
    spec = None if pipeline else normalize_config(config)
    if spec is not None and allocation_option(config) is not None:
        spec = _allocated(model, spec, allocation_option(config), kwargs.get("dummy_input"))
    baseline = teacher = None
    if pipeline or spec.framework == "torch":  # type: ignore[union-attr]
        from aup.compression.torch.deploy import baseline

        if distill is not None and distill.active:  # the dense model before any compressor touches it
            teacher = baseline.dense_snapshot(model)
    elif distill is not None:
        raise ValueError("compression_distill: distillation is implemented for the torch framework only")
    # the dense baseline is copied once the kind of report (deployed file or torch) is known
    with baseline.deferred() if baseline is not None else contextlib.nullcontext():
        if pipeline:
            if args:
                raise ValueError("create_compressor: a compression pipeline takes its extra arguments by keyword "
                                 "(each stage receives those its constructor accepts)")
            from aup.compression.torch.pipeline import PipelineCompressor

            stages = pipeline_stages(config)
            options = [allocation_option(raw) for raw in _raw_stages(config)]
            stages = [stage if option is None else _allocated(model, stage, option, kwargs.get("dummy_input"))
                      for stage, option in zip(stages, options)]
            compressor = PipelineCompressor(model, stages, **kwargs)
        else:
            compressor = build_stage(model, spec, args, kwargs)
    if deploy is not _NO_DEPLOY_KEY:
        from aup.compression.torch.deploy.settings import DeploySettings

        compressor.deploy_settings = DeploySettings.parse(deploy, "compression_deploy")
    if baseline is not None:
        baseline.snapshot_baseline(model, compressor.baseline_kind)
    if distill is not None:
        compressor.set_distillation(distill, teacher)
    return compressor


def distill_setting(config: Mapping[str, Any]) -> Any:
    """The concrete distillation options of a job config (``compression_distill``) or of a
    compression section without ranges (``distill``); None when there are none."""
    from aup.compression.distill_spec import parse_distill

    if not isinstance(config, Mapping):
        return None
    if "compression_distill" in config:
        return parse_distill(config["compression_distill"], "compression_distill")
    section = config.get("compression", config)
    for stage in section if isinstance(section, list) else [section]:
        if isinstance(stage, Mapping) and "distill" in stage:
            return parse_distill(stage["distill"], "compression.distill")
    return None


_NO_DEPLOY_KEY: Any = object()


def allocation_option(config: Any) -> Any:
    """A stage's per-layer allocation request: the job config's key, or a section's ``allocation``."""
    if not isinstance(config, Mapping):
        return None
    if ALLOCATION_JOB_KEY in config:
        return config[ALLOCATION_JOB_KEY]
    section = config.get("compression", config)
    return section.get("allocation") if isinstance(section, Mapping) else None


def _raw_stages(config: Mapping[str, Any]) -> list[Any]:
    stages = config["compression_pipeline"] if "compression_pipeline" in config else config["compression"]
    return list(stages)


def _allocated(model: Any, spec: CompressionSpec, option: Any, dummy_input: Any) -> CompressionSpec:
    """``spec`` with its global sparsities split per layer (``compression.allocation``)."""
    import dataclasses

    from aup.compression.allocation import parse_allocation
    from aup.compression.torch.allocation import apply_allocation

    allocation = parse_allocation(option, "compression_allocation")
    cls = resolve_class(spec)  # names and entries first: their errors read better than the allocation's
    # the allowed one-shot pruners decide from class attributes which layers they can prune
    config_list = apply_allocation(model, spec.compressor, spec.config_list, allocation, dummy_input,
                                   check=lambda name, module: cls.check_module(cls, name, module))
    return dataclasses.replace(spec, config_list=config_list)


def deploy_setting(config: Mapping[str, Any]) -> Any:
    """The ``deploy`` request of a job config (``compression_deploy``) or of a compression section."""
    if not isinstance(config, Mapping):
        return _NO_DEPLOY_KEY
    if "compression_deploy" in config:
        return config["compression_deploy"]
    section = config.get("compression", config)
    stages = section if isinstance(section, list) else [section]
    for stage in stages:
        if isinstance(stage, Mapping) and "deploy" in stage:
            return stage["deploy"]
    return _NO_DEPLOY_KEY
