"""What each trial process gets from the runner: its environment variables and, on GPUs, its device.

The base environment is built once per run: the runner's own environment, the experiment's
``runtime_args.env``, ``KERAS_HOME`` and ``MPLCONFIGDIR`` under the working directory unless set
(Keras writes ``keras.json`` there on import, never into ``~/.keras``; matplotlib, which TensorFlow
imports, its font cache and config, never into ``~/.cache`` / ``~/.config``), and no visible GPU for ``"resource":
"cpu"`` (the resource's row in ``aup.resources`` says how its trials see GPUs). Each attempt adds
the variables that name it (``AUP_TRIAL``, ``AUP_EXPERIMENT``, the
process key by which a resumed runner finds orphans) and its GPU for ``"resource": "gpu"``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from aup import channel
from aup.resources import resource_row
from aup.runner.launcher import KERAS_HOME_REL, MPLCONFIGDIR_REL
from aup.runner.state import PROCESS_KEY_ENV, ActiveTrial

if TYPE_CHECKING:
    from aup.config_schema import Experiment


class TrialEnvironment:
    """The base environment and the GPU pool of one run; ``for_attempt`` gives one attempt's env."""

    def __init__(self, exp: "Experiment", workingdir: Path) -> None:
        self.devices: list[str] = device_pool(exp)
        self.base: dict[str, str] = base_env(exp, workingdir)

    def device_free(self, active: Sequence[ActiveTrial]) -> bool:
        """Whether another trial can start (always, unless GPUs are handed out and all are taken)."""
        return not self.devices or len(active) < len(self.devices)

    def take_device(self, active: Sequence[ActiveTrial]) -> str | None:
        """A GPU id not yet used as often as it is listed (None when not handing out GPUs)."""
        if not self.devices:
            return None
        used = [a.device for a in active]
        for device in dict.fromkeys(self.devices):
            if used.count(device) < self.devices.count(device):
                return device
        raise RuntimeError("no free GPU")  # guarded by device_free

    def for_attempt(self, active: ActiveTrial, study_name: str) -> dict[str, str]:
        env = dict(self.base)
        env["AUP_TRIAL"] = str(active.trial.number)
        env["AUP_EXPERIMENT"] = study_name
        env[PROCESS_KEY_ENV] = active.process_key
        if active.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = active.device
        return env


def device_pool(exp: "Experiment") -> list[str]:
    """GPU ids to hand out, one per running trial (an id listed twice runs two trials on it), for a
    resource whose row hands out a pool (``gpu``)."""
    if resource_row(exp.resource).devices != "pool":
        return []
    gpus = exp.resource_args.gpus
    if gpus is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        gpus = [g for g in visible.split(",") if g.strip()] or ["0"]
    return [str(g) for g in gpus]


def base_env(exp: "Experiment", workingdir: Path) -> dict[str, str]:
    """The environment every trial of the run starts from."""
    env = dict(os.environ)
    env.update(exp.runtime_args.env)
    env.setdefault("KERAS_HOME", str(workingdir / KERAS_HOME_REL))
    env.setdefault("MPLCONFIGDIR", str(workingdir / MPLCONFIGDIR_REL))
    if resource_row(exp.resource).devices == "hidden":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if exp.resource_args.early_stop is not None and len(exp.objectives) > 1:
        env[channel.EARLY_SIZE_ENV] = "1"  # rungs rank by size: compressors report it at once
    return env
