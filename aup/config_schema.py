"""The experiment JSON's schema: one strict pydantic model per section.

Auptimizer accepted any key silently, so a typo such as ``n_sample`` ran a different experiment than
the user meant. Here every section is closed (``extra="forbid"``) with strict types; the loader
(``aup.config``) turns pydantic's errors into one line per problem. Free of optuna and torch.
"""
from __future__ import annotations

import math
import unicodedata
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aup.errors import ProblemError

# Keys the runner writes into every job config; a hyperparameter may not shadow them.
RESERVED_PARAMETER_NAMES = frozenset({"tid", "n_iterations", "save_model", "folder_name", "job_id"})

# Trial attributes the runner records itself; a multi_res_labels label may not take these names.
RESERVED_LABELS = frozenset({"score", "job_config", "job_config_path", "log_path", "attempts", "status_reason",
                             "budget", "interrupted", "requeued_from"})


MAX_NAME_LENGTH = 200
# control, format (bidi overrides, zero-width), surrogate, private-use, unassigned, line/paragraph separators
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class _Section(BaseModel):
    """Strict and closed: JSON types must match, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


class Parameter(_Section):
    """One entry of ``parameter_config`` (Auptimizer's keys plus ``log``)."""

    name: str
    type: Literal["float", "int", "choice"] = "int"  # Auptimizer's default
    range: list[Any]
    interval: Union[float, None] = None
    n: Union[int, None] = Field(default=None, ge=2)
    log: bool = False
    condition: Union[list[Any], None] = None  # [parent name, value]: sampled only when the parent has it

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        if value in RESERVED_PARAMETER_NAMES:
            raise ValueError(f"{value!r} is reserved for the runner's own job config keys")
        return value

    @model_validator(mode="after")
    def _range_ok(self) -> "Parameter":
        if self.type == "choice":
            if not self.range:
                raise ProblemError("range", "a choice needs a non-empty list of values")
            if self.log:
                raise ProblemError("log", "only float and int parameters can be log-scaled")
            return self
        if len(self.range) != 2:
            raise ProblemError("range", f"expected [min, max] for a {self.type} parameter, got {self.range!r}")
        low, high = self.range
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ProblemError("range", f"expected two finite numbers, got {self.range!r}")
            if self.type == "int" and not float(bound).is_integer():
                raise ProblemError("range", f"expected two integers for an int parameter, got {self.range!r}")
        if low > high or (self.type == "float" and low == high):
            raise ProblemError("range", f"the range {self.range!r} is empty (expected min < max)")
        if self.log and low <= 0:
            raise ProblemError("range", f"a log-scaled range must be positive, got {self.range!r}")
        if self.interval is not None and self.interval <= 0:
            raise ProblemError("interval", f"expected a positive step, got {self.interval!r}")
        return self


class RuntimeArgs(_Section):
    """How each trial process runs: extra environment variables, a wall-clock limit, output limits."""

    env: dict[str, str] = Field(default_factory=dict)
    timeout: Union[float, None] = Field(default=None, gt=0)
    # a trial's output beyond this many MB is cut (a note marks the place; the last 8 KB are kept); null: no cap
    log_limit_mb: Union[float, None] = Field(default=50.0, gt=0)
    # delete the job config, log and channel files of trials that completed or were pruned (the store keeps
    # the job config); failed trials keep theirs for inspection
    prune_job_files: bool = False


class ResourceArgs(_Section):
    """Auptimizer's ``resource_args`` for local trials, plus ``gpus`` (the device list for ``gpu``)."""

    save_model: bool = False
    multi_res_labels: Union[list[str], None] = None
    track_intermediate_results: bool = False
    early_stop: Union[dict[str, Any], None] = None
    gpus: Union[list[Union[str, int]], None] = None
    # "resource": "ray" only: the cluster (None: $RAY_ADDRESS, else a local one), what each trial
    # reserves, and Ray's runtime_env (working_dir, pip, env_vars...) for the workers
    address: Union[str, None] = None
    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    runtime_env: Union[dict[str, Any], None] = None

    @field_validator("early_stop")
    @classmethod
    def _policy_named(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and "aup_policy" not in value:
            raise ValueError("early_stop needs 'aup_policy' (bandit, median, truncation, successive_halving, "
                             "curve_fitting)")
        return value

    @field_validator("multi_res_labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        taken = sorted(set(value or ()) & RESERVED_LABELS)
        if taken:
            raise ValueError(f"{taken[0]!r} is a name the runner records itself; choose another label")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_nonempty(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None and not value:
            raise ValueError("expected at least one device id")
        return value


class JobFailure(_Section):
    """Auptimizer's ``job_failure``: when the section exists, ``job_retries`` defaults to 3."""

    ignore_fail: bool = False
    job_retries: int = Field(default=3, ge=0)


Direction = Literal["max", "min"]


class Experiment(_Section):
    """A validated experiment. Proposer-specific top-level keys are kept in ``proposer_options``."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    script: str
    resource: Literal["cpu", "gpu", "ray"]
    # Optional only for a one-time compression run (a ``compression`` section without ranges, see
    # ``_one_time_defaults``) and for several objectives (tpe); otherwise required as in Auptimizer.
    proposer: Union[str, None] = None
    target: Union[Direction, dict[str, Direction], None] = None
    n_samples: Union[int, None] = Field(default=None, ge=1, le=1_000_000)
    n_parallel: int = Field(default=1, ge=1)
    random_seed: int = 0
    workingdir: Union[str, None] = None
    cwd: Union[str, None] = None
    parameter_config: list[Parameter] = Field(default_factory=list)
    runtime_args: RuntimeArgs = Field(default_factory=RuntimeArgs)
    resource_args: ResourceArgs = Field(default_factory=ResourceArgs)
    job_failure: JobFailure = Field(default_factory=lambda: JobFailure(job_retries=0))
    # one stage or a pipeline (list of stages); checked by aup.compression.search_space
    compression: Union[dict[str, Any], list[Any], None] = None
    # feasibility conditions over recorded metrics, e.g. {"model_bytes": "<= 0.25 * baseline_model_bytes"}
    constraints: Union[dict[str, Union[str, float, int, dict[str, Union[float, int]]]], None] = None
    # target mode: "first_feasible" stops proposing once a trial meets every constraint ("budget": run all)
    stop: Literal["budget", "first_feasible"] = "budget"
    # the objective that picks the recommended trial among the feasible ones (default: the first in target)
    recommend: Union[str, None] = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(f"expected at most {MAX_NAME_LENGTH} characters, got {len(value):,}")
        bad = next((ch for ch in value if unicodedata.category(ch) in _BAD_NAME_CATEGORIES), None)
        if bad is not None:
            raise ValueError(f"control or invisible characters are not allowed (found U+{ord(bad):04X})")
        return value

    @field_validator("target")
    @classmethod
    def _target_ok(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError("expected 'max', 'min' or a non-empty {objective: 'max'|'min'} object")
        return value

    @model_validator(mode="after")
    def _one_time_defaults(self) -> "Experiment":
        """Fill ``proposer``/``target`` where Auptimizer had a mode without them.

        A ``compression`` section that searches nothing, with no ``parameter_config`` and no
        ``proposer``, is Auptimizer's one-time compression: exactly one trial with that config
        (``random`` over an empty space, ``n_samples`` 1), ``target`` max unless given. Several
        objectives without a proposer default to ``tpe``: in ``benchmarks/search_efficiency.py`` it
        reached the largest share of the best accuracy/size front at 20 and 40 trials, while
        ``nsga2``'s first generation (50 trials) is random sampling (docs/search-efficiency.md).
        """
        if self.proposer is None:
            if self.compression is not None and not self.parameter_config and not compression_searches(self.compression):
                self.proposer = "random"
                if self.n_samples not in (None, 1):
                    raise ProblemError("n_samples", "a one-time compression (no ranges, no proposer) runs exactly one "
                                     f"trial, got {self.n_samples}")
                self.n_samples = 1
                if self.target is None:
                    self.target = "max"
            elif isinstance(self.target, dict) and len(self.target) > 1:
                self.proposer = "tpe"
            else:
                raise ProblemError("proposer", "required key is missing")
        if self.target is None:
            raise ProblemError("target", "required key is missing")
        return self

    @model_validator(mode="after")
    def _target_mode(self) -> "Experiment":
        """``stop`` needs something to be met; ``recommend`` names an objective."""
        if self.stop == "first_feasible" and not self.constraints:
            raise ProblemError("stop", "\"first_feasible\" stops at the first trial meeting the constraints; add a "
                               "\"constraints\" section, e.g. {\"score\": \">= baseline_score - 0.01\"}")
        if self.recommend is not None and self.recommend not in self.objectives:
            raise ProblemError("recommend", f"expected one of the objectives ({', '.join(self.objectives)}), "
                               f"got {self.recommend!r}")
        return self

    @model_validator(mode="after")
    def _seeds_need_a_sampler(self) -> "Experiment":
        """``"allocation": {"mode": "seed"}`` queues trials for the sampler; grid and bandit proposers
        make their own (and would run the seeds outside their brackets)."""
        stages = self.compression if isinstance(self.compression, list) else [self.compression]
        seeded = any(isinstance(stage, dict) and isinstance(stage.get("allocation"), dict)
                     and stage["allocation"].get("mode") == "seed" for stage in stages)
        if seeded and self.proposer in ("sequence", "hyperband", "bohb"):
            raise ProblemError("compression.allocation.mode", f"\"seed\" queues trials for a sampler (random, tpe, "
                               f"gp, cmaes, qmc, nsga2); proposer {self.proposer!r} makes its own")
        return self

    @model_validator(mode="after")
    def _parameters_unique(self) -> "Experiment":
        seen: set[str] = set()
        for parameter in self.parameter_config:
            if parameter.name in seen:
                raise ProblemError("parameter_config", f"the name {parameter.name!r} is used twice")
            seen.add(parameter.name)
        return self

    # ---- derived values the runner uses -------------------------------------------------------
    @property
    def objectives(self) -> list[str]:
        """Objective names in order: ``["score"]`` for the string form of ``target``."""
        return ["score"] if isinstance(self.target, str) else list(self.target)

    @property
    def directions(self) -> list[str]:
        """Optuna directions matching ``objectives``."""
        targets = [self.target] if isinstance(self.target, str) else list(self.target.values())
        return ["maximize" if t == "max" else "minimize" for t in targets]

    @property
    def proposer_options(self) -> dict[str, Any]:
        """The proposer-specific top-level keys (``engine``, ``max_iter``...), as given."""
        return dict(self.model_extra or {})

    @property
    def parameter_dicts(self) -> list[dict[str, Any]]:
        return [p.model_dump(exclude_none=True) for p in self.parameter_config]


def compression_searches(section: Any) -> bool:
    from aup.compression.search_space import has_ranges

    return has_ranges(section)
