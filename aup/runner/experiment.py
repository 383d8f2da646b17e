"""The experiment loop: proposer -> trial processes -> store, on Optuna's ask/tell.

One thread does everything: it asks the proposer for trials while slots are free, starts each trial
as a process (``launcher.TrialProcess``), polls them with a short adaptive sleep, reports
intermediate results (``trial.report``) and asks the pruner, and tells the study how each trial
ended. No worker threads means no shared-state races (Auptimizer ran callbacks on executor
threads and mutated ``os.environ`` from them), and signals only set flags.

Record of a trial (DESIGN.md "Per-trial record"): optuna params = the proposal's params; user
attrs ``job_config``, ``job_config_path``, ``log_path``, ``attempts``, ``status_reason``, ``budget``,
``score``, one attr per ``multi_res_labels`` label and per reported metric; intermediate values via
``trial.report``.

Failure policy (``job_failure``): an unusable attempt is re-run with the same job config up to
``job_retries`` times; then the trial FAILs with its reason. ``ignore_fail: false`` stops the
experiment at the first failed trial (status failed), ``true`` continues.

Interruption: SIGINT/SIGTERM stop every running trial, record it FAIL "interrupted" and enqueue its
params again, so ``aup resume`` re-runs exactly the unfinished work. A runner killed with SIGKILL
leaves RUNNING trials behind; resume treats them the same way.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aup import store
from aup.config import LoadedExperiment, validate_experiment
from aup.errors import ConfigError, UserError
from aup.runner.jobconfig import JobConfigBuilder, job_config_builder
from aup.runner.launcher import AttemptOutcome, TrialProcess
from aup.runner.progress import Progress, print_summary

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_MIN_S, POLL_MAX_S = 0.002, 0.025
STOP_GRACE_S = 3.0
INTERRUPTED = "interrupted"
# Trial user attributes the runner owns; a metric of the same name reported by a script is dropped.
RUNNER_ATTRS = frozenset({"job_config", "job_config_path", "log_path", "attempts", "status_reason", "budget",
                          INTERRUPTED, "requeued_from"})


@dataclass
class Prepared:
    """Everything built from the experiment before the database is touched."""

    loaded: LoadedExperiment
    builder: JobConfigBuilder
    pruner: Any
    sampler_factory: Any  # () -> sampler; a fresh sampler for the probe and for the real study


@dataclass
class RunResult:
    study_name: str
    status: str
    exit_code: int
    reason: str | None = None
    best_model_path: str | None = None


@dataclass
class _Active:
    """A trial whose process is running (possibly on a retry)."""

    trial: Any  # optuna.Trial
    params: dict[str, Any]
    trial_id: str
    job_config: dict[str, Any]
    job_path: Path
    process: TrialProcess
    device: str | None
    attempt: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    steps_reported: int = 0
    intermediate: list[float] = field(default_factory=list)
    held: list[Any] = field(default_factory=list)  # results not yet reported (no live reporting)


def prepare(loaded: LoadedExperiment, builder: JobConfigBuilder | None = None) -> Prepared:
    """Build search space, pruner and sampler, and dry-run the proposer on an in-memory study.

    Every problem is a ConfigError raised here, before the first trial and before anything is
    written to the database.
    """
    import optuna

    import aup.proposer_ext as ext

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress display reports trials
    exp = loaded.experiment
    source = loaded.path
    builder = builder or _wrap(source, lambda: job_config_builder(exp))
    early_stop = exp.resource_args.early_stop
    if early_stop is not None and len(exp.objectives) > 1:
        raise ConfigError(f"{source}: resource_args.early_stop: early stopping needs a single objective "
                          f"(target has {len(exp.objectives)})")
    pruner = _wrap(source, lambda: ext.build_pruner(early_stop), "resource_args.early_stop")
    build_sampler = getattr(ext, "build_sampler", None)
    proposer = exp.proposer.lower()
    options = exp.proposer_options

    takes_space = build_sampler is not None and "space" in inspect.signature(build_sampler).parameters

    def sampler_factory() -> Any:
        if build_sampler is None:
            return None
        extra = {"space": builder.space} if takes_space else {}
        return build_sampler(proposer, options, exp.random_seed, len(exp.objectives), **extra)

    sampler_factory = _checked(source, sampler_factory)
    probe = optuna.create_study(directions=exp.directions, sampler=sampler_factory(), pruner=pruner)
    _wrap(source, lambda: ext.build_proposer(proposer, options, builder.space, probe, exp.n_samples,
                                             exp.random_seed), "proposer")
    _check_model(source, builder, loaded.workingdir)
    return Prepared(loaded, builder, pruner, sampler_factory)


def _check_model(source: str, builder: JobConfigBuilder, workingdir: Path) -> None:
    """Op names/types of the compression section against the model it names (``"model": "module:callable"``)."""
    if getattr(builder, "model_ref", None) is None:
        return
    from aup.compression.model_check import check_model

    problems, warnings = check_model(builder, workingdir)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    for line in warnings:
        print(f"aup: warning: {source}: {line}", file=sys.stderr)


def _wrap(source: str, make: Any, key: str | None = None) -> Any:
    """Call ``make``; a ValueError (the proposer API's "bad user input") becomes a one-line ConfigError.

    Other exceptions are bugs and propagate (the CLI shows them as internal errors).
    """
    try:
        return make()
    except ValueError as exc:
        text = str(exc).strip() or type(exc).__name__
        lines = [line if line.startswith(f"{source}: ") else f"{source}: {_with_key(line, key)}"
                 for line in text.splitlines() if line.strip()]
        raise ConfigError("\n".join(lines)) from None
    except ConfigError as exc:
        lines = [line if line.startswith(f"{source}: ") else f"{source}: {line}" for line in str(exc).splitlines()]
        raise ConfigError("\n".join(lines)) from None


def _with_key(message: str, key: str | None) -> str:
    """Prefix ``key`` unless the message already names a key path (``early_stop.warmup`` gets its parent)."""
    head = message.partition(": ")[0]
    if key is None or message.startswith(key):
        return message
    parent, _, last = key.rpartition(".")
    if parent and (head == last or head.startswith(last + ".")):
        return f"{parent}.{message}"
    if head and " " not in head:
        return message
    return f"{key}: {message}"


def _checked(source: str, factory: Any) -> Any:
    _wrap(source, factory, "proposer")  # fail early on bad sampler options
    return factory


class ExperimentRunner:
    """Runs (or resumes) one experiment to the end; ``run()`` returns a RunResult with the exit code."""

    def __init__(self, prepared: Prepared, storage_url: str, *, resume_study: str | None = None,
                 console: "Console | None" = None, live: bool | None = None) -> None:
        from rich.console import Console

        self.prepared = prepared
        self.loaded = prepared.loaded
        self.exp = prepared.loaded.experiment
        self.storage_url = storage_url
        self.resume_study = resume_study
        self.console = console or Console()
        self.live = live
        self.workingdir = prepared.loaded.workingdir
        self.jobs_dir = self.workingdir / "jobs"
        self.active: list[_Active] = []
        self._pending: list[tuple[_Active, AttemptOutcome, list[Any], list[float], str | None]] = []
        self._interrupt = 0
        self._stop_reason: str | None = None
        self._devices: list[str] = self._device_pool()
        self._labels = list(self.exp.resource_args.multi_res_labels or [])
        self._retries = self.exp.job_failure.job_retries
        self._single = len(self.exp.objectives) == 1
        self._early_stop = self.exp.resource_args.early_stop is not None
        # intermediate results go to the study as they come when something watches them live
        self._live_reports = self._early_stop or self.exp.resource_args.track_intermediate_results
        self._base_env = self._make_base_env()
        from aup.runner.constraints import parse_constraints  # issue 4: experiment "constraints"

        self._constraints = parse_constraints(self.exp.constraints or {})

    # ---- set-up ----------------------------------------------------------------------------
    def _device_pool(self) -> list[str]:
        """GPU ids to hand out, one per running trial (an id listed twice runs two trials on it)."""
        if self.exp.resource != "gpu":
            return []
        gpus = self.exp.resource_args.gpus
        if gpus is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            gpus = [g for g in visible.split(",") if g.strip()] or ["0"]
        return [str(g) for g in gpus]

    def _make_base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.exp.runtime_args.env)
        if self.exp.resource == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def _open(self) -> tuple["optuna.Study", Any]:
        import aup.proposer_ext as ext

        storage = store.open_storage(self.storage_url)
        sampler = self.prepared.sampler_factory()
        if self.resume_study is None:
            name = store.unique_study_name(storage, self.exp.name)
            study = store.create_experiment_study(storage, name, self.exp.directions, sampler=sampler,
                                                  pruner=self.prepared.pruner)
            study.set_user_attr(store.ATTR_EXPERIMENT, self.loaded.raw)
            study.set_user_attr(store.ATTR_EXPERIMENT_PATH, os.path.abspath(self.loaded.path))
            study.set_user_attr(store.ATTR_WORKINGDIR, str(self.workingdir))
            study.set_user_attr(store.ATTR_STARTED, store.now_iso())
        else:
            study = store.load_experiment_study(storage, self.resume_study, sampler=sampler,
                                                pruner=self.prepared.pruner)
            requeue = self._recover_interrupted(study)
            study.set_user_attr("resumed", [*study.user_attrs.get("resumed", []), store.now_iso()])
        study.set_user_attr(store.ATTR_STATUS, "running")
        study.set_user_attr(store.ATTR_ENDED, None)
        study.set_user_attr("runner", {"pid": os.getpid(), "host": socket.gethostname()})
        proposer = ext.build_proposer(self.exp.proposer.lower(), self.exp.proposer_options,
                                      self.prepared.builder.space, study, self.exp.n_samples,
                                      self.exp.random_seed)
        if self.resume_study is not None:
            for number, params in requeue:
                _requeue(study, proposer, number, params)
        return study, proposer

    def _recover_interrupted(self, study: "optuna.Study") -> list[tuple[int, dict[str, Any]]]:
        """Trials left RUNNING by a killed runner: stop leftovers, mark FAIL "interrupted".

        Returns (number, params) of each, to be queued again once the proposer exists.
        """
        from optuna.trial import TrialState

        requeue = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _kill_orphans(trial.user_attrs.get("job_config_path"))
            storage = study._storage
            storage.set_trial_user_attr(trial._trial_id, "status_reason", INTERRUPTED)
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            requeue.append((trial.number, dict(trial.params)))
        return requeue

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        study, proposer = self._open()
        self.study, self.proposer = study, proposer
        self.slug = store.slug(study.study_name)
        maximize = self.exp.directions[0] == "maximize"
        total = getattr(proposer, "total", self.exp.n_samples)
        progress = Progress(study.study_name, console=self.console, live=self.live, total=total,
                            maximize=maximize, multi_objective=not self._single)
        self.progress = progress
        self._seed_progress(study)
        previous = self._install_signals()
        status, reason = "finished", None
        try:
            with progress:
                self._loop()
            if self._interrupt:
                status, reason = INTERRUPTED, INTERRUPTED
            elif self._stop_reason:
                status, reason = "failed", self._stop_reason
        except BaseException as exc:
            try:  # keep what finished, stop the rest, mark the study; the original error wins
                self._record_pending()
                self._stop_all(f"{INTERRUPTED}: the runner stopped ({type(exc).__name__})")
                study.set_user_attr(store.ATTR_STATUS, "failed")
                study.set_user_attr(store.ATTR_ENDED, store.now_iso())
            except Exception:
                for active in self.active:
                    active.process.kill()
            raise
        finally:
            self._restore_signals(previous)
        return self._finish(status, reason)

    def _seed_progress(self, study: "optuna.Study") -> None:
        """On resume, the counters start from what the study already holds."""
        from optuna.trial import TrialState

        counts = self.progress.counts
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.COMPLETE:
                counts.done += 1
                if self._single and trial.value is not None:
                    self.progress.note_best(trial.number, trial.value)
            elif trial.state == TrialState.PRUNED:
                counts.pruned += 1
            elif trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED):
                counts.failed += 1

    def _loop(self) -> None:
        """Poll, refill free slots, then write down what finished (so a new trial starts first)."""
        exhausted = False
        delay = POLL_MIN_S
        while True:
            busy = self._poll_active()
            if self._interrupt or self._stop_reason:
                self._record_pending()
                reason = INTERRUPTED if self._interrupt else f"{INTERRUPTED}: {self._stop_reason}"
                self._stop_all(reason)
                return
            exhausted, waiting, launched = self._fill_slots(exhausted)
            if self._pending:
                self._record_pending()
                if waiting:  # the results just told may unblock the proposer (a finished rung)
                    exhausted, waiting, _ = self._fill_slots(exhausted)
            busy = busy or launched
            self.progress.set_running(len(self.active))
            if not self.active:
                if exhausted:
                    return
                if waiting:
                    raise RuntimeError("the proposer is waiting for results but no trial is running")
            delay = POLL_MIN_S if busy else min(POLL_MAX_S, delay * 1.5)
            time.sleep(delay)

    def _fill_slots(self, exhausted: bool) -> tuple[bool, bool, bool]:
        """Start proposals while slots (and devices) are free; returns (exhausted, waiting, launched)."""
        waiting = launched = False
        while not exhausted and len(self.active) < self.exp.n_parallel and self._device_free():
            proposal = self.proposer.propose()
            if proposal is None:
                exhausted = True
            elif _is_wait(proposal):
                waiting = True
                break
            else:
                self._launch(proposal)
                launched = True
        return exhausted, waiting, launched

    def _device_free(self) -> bool:
        return not self._devices or len(self.active) < len(self._devices)

    def _take_device(self) -> str | None:
        if not self._devices:
            return None
        used = [a.device for a in self.active]
        for device in dict.fromkeys(self._devices):
            if used.count(device) < self._devices.count(device):
                return device
        raise RuntimeError("no free GPU")  # guarded by _device_free

    # ---- launching ---------------------------------------------------------------------------
    def _launch(self, proposal: Any) -> None:
        trial = proposal.trial
        trial_id = f"{self.slug}-{trial.number}"
        params = dict(proposal.params)
        job = self.prepared.builder.build(params)
        job.update(getattr(proposal, "extras", None) or {})
        budget = getattr(proposal, "budget", None)
        if budget is not None:
            job["n_iterations"] = budget
        job["folder_name"] = trial_id  # every trial its own output folder, so parallel trials never share files
        if self.exp.resource_args.save_model:
            job["save_model"] = True
        job = json.loads(json.dumps(job, default=_jsonable))  # exactly what the file will hold
        job_path = self.jobs_dir / f"{trial_id}.json"
        with open(job_path, "w", encoding="utf-8") as handle:
            json.dump(job, handle, indent=2)
        device = self._take_device()
        active = _Active(trial, params, trial_id, job, job_path, process=None, device=device)  # type: ignore[arg-type]
        self._start_attempt(active, record=False)  # first: the database write overlaps the trial's start-up
        self.active.append(active)
        attrs = {"job_config": job, "job_config_path": str(job_path), "log_path": active.attempts[-1]["log"]}
        if budget is not None:
            attrs["budget"] = budget
        self._set_attrs(active, attrs)

    def _set_attrs(self, active: _Active, attrs: dict[str, Any]) -> None:
        store.set_trial_user_attrs(self.study, active.trial._trial_id, attrs)

    def _start_attempt(self, active: _Active, record: bool = True) -> None:
        suffix = "" if active.attempt == 0 else f".{active.attempt}"
        log_path = self.jobs_dir / f"{active.trial_id}{suffix}.out"
        env = dict(self._base_env)
        env["AUP_TRIAL"] = str(active.trial.number)
        env["AUP_EXPERIMENT"] = self.study.study_name
        if active.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = active.device
        process = TrialProcess(
            command=[*self.loaded.command, str(active.job_path)], workingdir=self.workingdir, env=env,
            log_path=log_path, channel_path=self.jobs_dir / f"{active.trial_id}{suffix}.channel.jsonl",
            timeout=self.exp.runtime_args.timeout,
        )
        active.process = process
        process.start()
        if record:
            active.trial.set_user_attr("log_path", str(log_path))
        # recorded when the attempt ends (one write less per trial; a killed runner's leftovers are
        # found on resume by their job config path, see _kill_orphans)
        active.attempts.append({"number": active.attempt, "start": _iso(process.started), "end": None,
                                "exit_code": None, "reason": None, "log": str(log_path)})

    # ---- polling -----------------------------------------------------------------------------
    def _poll_active(self) -> bool:
        """Advance every running trial; True if anything happened (keeps polling fast).

        A finished trial leaves ``active`` at once (its slot is free) and is queued in ``_pending``;
        ``_record_pending`` writes it to the study after the free slots are refilled.
        """
        busy = False
        for active in list(self.active):
            code = active.process.poll()  # first: once it has exited, the files below are complete
            fresh = active.process.new_results()
            if code is None:
                if fresh and not self._live_reports:
                    active.held.extend(fresh)  # written when the trial ends
                elif fresh:
                    busy = True
                    if self._report(active, fresh, may_prune=True):
                        self._prune(active)
                continue
            busy = True
            self._attempt_ended(active, fresh)
        return busy

    def _attempt_ended(self, active: _Active, fresh: list[Any]) -> None:
        """Retry an unusable attempt right away, else queue the trial for recording."""
        outcome = active.process.outcome()
        results = active.held + fresh + active.process.unreported()
        active.held = []
        values, reason = self._objective_values(outcome)
        if reason is not None and outcome.mismatch is not None:
            reason = self._mismatch_stop(active, outcome.mismatch)
        elif reason is not None and active.attempt < self._retries and not self._interrupt:
            self._report(active, results)  # not a pruning decision: this attempt is over
            self._record_attempt(active, outcome, reason)
            self.progress.retrying(active.trial.number, active.attempt, reason)
            active.attempt += 1
            active.intermediate = []
            self._start_attempt(active)
            return
        self.active.remove(active)
        if reason is not None and not self.exp.job_failure.ignore_fail and self._stop_reason is None:
            self._stop_reason = f"trial {active.trial.number} failed: {reason}"
        self._pending.append((active, outcome, results, values, reason))

    def _mismatch_stop(self, active: _Active, record: dict[str, Any]) -> str:
        """The config_list does not fit the model: every trial would fail the same way, so stop now."""
        from aup.compression.model_check import mismatch_line

        builder = self.prepared.builder if hasattr(self.prepared.builder, "user_entry") else None
        line = mismatch_line(builder, active.job_config, record)
        if self._stop_reason is None:
            self._stop_reason = f"trial {active.trial.number}: {line}"
        return line

    def _record_pending(self) -> None:
        """Write finished trials to the study: intermediate values, attempts, metrics, state."""
        from optuna.trial import TrialState

        pending, self._pending = self._pending, []
        for active, outcome, results, values, reason in pending:
            if results and not self._only_final(active, outcome):
                self._report(active, results)
            attrs = {**self._metric_attrs(active, outcome), "attempts": self._attempt_record(active, outcome, reason)}
            if reason is None:
                self._set_attrs(active, attrs)
                self._set_constraints(active, attrs, values)  # before tell, as optuna 5 wants (issue 4)
                self._tell(active, TrialState.COMPLETE, values, values[0] if self._single else values, None)
            else:
                self._set_attrs(active, {**attrs, "status_reason": reason})
                self._tell(active, TrialState.FAIL, None, None, reason)

    def _report(self, active: _Active, results: list[Any], may_prune: bool = False) -> bool:
        """Record intermediate results; True if the pruner says to stop the (running) trial."""
        values = [r[0] if isinstance(r, list) else r for r in results]
        values = [float(v) for v in values if isinstance(v, (int, float))]
        active.intermediate.extend(values)
        if not self._single:
            return False
        step_base = len(active.intermediate) - len(values)
        reported = False
        for offset, value in enumerate(values):
            step = step_base + offset
            if step < active.steps_reported or not _finite(value):
                continue
            active.trial.report(value, step)
            active.steps_reported = step + 1
            reported = True
        return may_prune and reported and self._early_stop and active.trial.should_prune()

    def _prune(self, active: _Active) -> None:
        from optuna.trial import TrialState

        step = active.steps_reported - 1
        reason = f"pruned at step {step} by early stopping"
        active.process.stop(reason, grace=STOP_GRACE_S)
        outcome = active.process.outcome()
        attrs = {**self._metric_attrs(active, outcome), "attempts": self._attempt_record(active, outcome, reason),
                 "status_reason": reason}
        last = active.intermediate[-1] if active.intermediate else None
        if last is not None:
            attrs["score"] = last
        self._set_attrs(active, attrs)
        self._tell(active, TrialState.PRUNED, None, last, reason)

    def _objective_values(self, outcome: AttemptOutcome) -> tuple[list[float], str | None]:
        """The values to tell (one per objective) or the reason the attempt is unusable."""
        if outcome.reason is not None:
            return [], outcome.reason
        final = outcome.final
        numbers = final if isinstance(final, list) else [final]
        if self._labels and len(numbers) != 1 + len(self._labels):
            return [], (f"expected {1 + len(self._labels)} values (score, {', '.join(self._labels)}), "
                        f"got {len(numbers)}")
        named = {"score": float(numbers[0]), **dict(zip(self._labels, map(float, numbers[1:])))}
        values = []
        for objective in self.exp.objectives:
            value = named.get(objective, outcome.metrics.get(objective))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return [], f"no value for the objective {objective!r} (report it with aup.log_metrics)"
            if not _finite(float(value)):
                return [], f"{objective} is {value}"
            values.append(float(value))
        return values, None

    def _set_constraints(self, active: _Active, recorded: dict[str, Any], values: list[float]) -> None:
        """Experiment ``constraints`` -> ``trial.set_constraint`` (feasible when <= 0) over the recorded metrics."""
        if not self._constraints:
            return
        from aup.runner.constraints import constraint_values

        scores = constraint_values(self._constraints, {**recorded, **dict(zip(self.exp.objectives, values))})
        for key, value in scores.items():
            active.trial.set_constraint(key, value)
        active.trial.set_user_attr("feasible", all(v <= 0 for v in scores.values()))

    def _only_final(self, active: _Active, outcome: AttemptOutcome) -> bool:
        """A trial whose one result is its final value has no intermediate values to store.

        (One database write less per trial. With ``track_intermediate_results`` or early stopping,
        every result is an intermediate result, as in Auptimizer.)
        """
        return len(outcome.results) == 1 and not self._live_reports

    def _metric_attrs(self, active: _Active, outcome: AttemptOutcome) -> dict[str, Any]:
        """Reported metrics, ``score`` and the ``multi_res_labels`` values, as trial user attributes."""
        attrs = {name: value for name, value in outcome.metrics.items() if name not in RUNNER_ATTRS}
        final = outcome.final
        if final is not None:
            numbers = final if isinstance(final, list) else [final]
            attrs["score"] = numbers[0]
            attrs.update(zip(self._labels, numbers[1:]))
        if not self._single and active.intermediate:
            attrs["intermediate_results"] = active.intermediate
        return attrs

    def _attempt_record(self, active: _Active, outcome: AttemptOutcome, reason: str | None) -> list[dict[str, Any]]:
        record = active.attempts[-1]
        record.update(end=_iso(active.process.ended or time.time()), exit_code=outcome.exit_code, reason=reason)
        return active.attempts

    def _record_attempt(self, active: _Active, outcome: AttemptOutcome, reason: str | None) -> None:
        active.trial.set_user_attr("attempts", self._attempt_record(active, outcome, reason))

    def _tell(self, active: _Active, state: Any, values: list[float] | None, value: Any, reason: str | None) -> None:
        self.study.tell(active.trial, values=values if values else None, state=state)
        if active in self.active:
            self.active.remove(active)
        self.proposer.complete(active.trial.number, state, value)
        self.progress.finished(active.trial.number, state.name, value, active.params, reason)

    # ---- stopping ----------------------------------------------------------------------------
    def _stop_all(self, reason: str) -> None:
        """Stop every running trial, record it FAIL "interrupted" and queue its params again."""
        from optuna.trial import TrialState

        for active in self.active:
            active.process.terminate()
        deadline = time.time() + STOP_GRACE_S
        for active in list(self.active):
            # a second Ctrl-C cuts the grace period short
            while active.process.poll() is None and time.time() < deadline and self._interrupt < 2:
                time.sleep(0.01)
            code = active.process.stop(reason, grace=0)
            active.attempts[-1].update(end=_iso(time.time()), exit_code=code, reason=reason)
            trial = active.trial
            self._set_attrs(active, {"attempts": active.attempts, "status_reason": reason, INTERRUPTED: True})
            self.study.tell(trial, state=TrialState.FAIL)
            _requeue(self.study, self.proposer, trial.number, active.params)
            self.active.remove(active)
            self.progress.set_running(len(self.active))

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            self._interrupt += 1

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (embedded use): no signal handling
                pass
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # ---- the end -----------------------------------------------------------------------------
    def _finish(self, status: str, reason: str | None) -> RunResult:
        study = self.study
        study.set_user_attr(store.ATTR_STATUS, status)
        study.set_user_attr(store.ATTR_ENDED, store.now_iso())
        if reason:
            study.set_user_attr("status_reason", reason)
        extra: list[str] = []
        best_model = None
        best = _best_trials(study, self._single)
        if status == "finished" and self.exp.resource_args.save_model:
            best_model, note = self._keep_best_model(best[0] if best else None)
            extra.append(note)
        if status == INTERRUPTED:
            extra.append(f"interrupted; continue with: aup resume {_quote(study.study_name)}")
        elif status == "failed":
            extra.append(f"experiment failed: {reason}")
        print_summary(self.console, study_name=study.study_name, status=status, trials=study.get_trials(deepcopy=False),
                      objectives=self.exp.objectives, storage_url=self.storage_url, best=best, extra=extra,
                      planned=getattr(self.proposer, "total", None) or self.exp.n_samples)
        code = {"finished": EXIT_OK, "failed": EXIT_FAILED, INTERRUPTED: EXIT_INTERRUPTED}[status]
        return RunResult(study.study_name, status, code, reason, best_model)

    def _keep_best_model(self, best: Any) -> tuple[str | None, str]:
        """Move the best trial's saved model to ``aup_models/<experiment>/``; delete the others'."""
        models = self.workingdir / "aup_models"
        folders = [models / t.user_attrs["job_config"]["folder_name"]
                   for t in self.study.get_trials(deepcopy=False)
                   if isinstance(t.user_attrs.get("job_config"), dict) and "folder_name" in t.user_attrs["job_config"]]
        target = models / self.study.study_name
        kept = None
        if best is not None:
            folder_name = best.user_attrs.get("job_config", {}).get("folder_name", "")
            source = models / folder_name
            if source.is_dir() and source != models:
                if target.exists():
                    shutil.rmtree(target)
                shutil.move(str(source), str(target))
                kept = str(target)
            elif folder_name and (self.workingdir / folder_name).is_dir():
                kept = str(self.workingdir / folder_name)  # Auptimizer's examples export to <workingdir>/<folder_name>
        for folder in folders:
            if folder.is_dir() and folder != target:
                shutil.rmtree(folder, ignore_errors=True)
        if kept:
            self.study.set_user_attr("best_model_path", kept)
            return kept, f"best model (trial {best.number}): {kept}"
        return None, "save_model: the best trial saved no model (nothing under aup_models/<folder_name> or <folder_name>)"


# Proposers that re-propose interrupted configurations themselves (grid points, hyperband rungs:
# their state is in the trials); a queued copy would be handed out in place of their own.
_SELF_REQUEUING = frozenset({"sequence", "hyperband", "bohb"})


def _requeue(study: "optuna.Study", proposer: Any, number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's params so that the next ``ask`` runs the same configuration."""
    if getattr(proposer, "requeues_interrupted", getattr(proposer, "name", None) in _SELF_REQUEUING):
        return
    study.enqueue_trial(params, user_attrs={"requeued_from": number})


def _best_trials(study: "optuna.Study", single: bool) -> list[Any]:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return []
    if single:
        reverse = study.direction.name == "MAXIMIZE"
        return sorted(complete, key=lambda t: t.value, reverse=reverse)
    return list(study.best_trials)


def _is_wait(proposal: Any) -> bool:
    from aup.proposer_ext import WAIT

    return proposal is WAIT


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _iso(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _quote(name: str) -> str:
    return name if all(c.isalnum() or c in "_-." for c in name) else repr(name)


def _kill_orphans(job_config_path: str | None) -> None:
    """Stop trial processes a killed runner left behind: those whose command line holds the job path."""
    if not job_config_path or not os.path.isdir("/proc"):
        return
    needle = job_config_path.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                arguments = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in arguments:
            try:
                os.killpg(int(entry.name), signal.SIGKILL)  # trials lead their own process group
            except ProcessLookupError:
                _quiet_kill(int(entry.name))
            except PermissionError:
                pass


def _quiet_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---- entry points used by the CLI ----------------------------------------------------------------
def run_experiment(path: str, storage_url: str, *, console: "Console | None" = None,
                   live: bool | None = None, builder: JobConfigBuilder | None = None) -> RunResult:
    """Validate ``path`` completely, then run it as a new study."""
    from aup.config import load_experiment

    loaded = load_experiment(path)
    prepared = prepare(loaded, builder)
    return ExperimentRunner(prepared, storage_url, console=console, live=live).run()


def resume_experiment(name: str, storage_url: str, *, console: "Console | None" = None,
                      live: bool | None = None) -> RunResult:
    """Continue the study ``name`` with the experiment JSON stored in it."""
    storage = store.open_storage(storage_url)
    study = store.load_experiment_study(storage, name)
    attrs = study.user_attrs
    status = attrs.get(store.ATTR_STATUS)
    if status == "finished":
        raise UserError(f"experiment {name!r} already finished; nothing to resume")
    runner_info = attrs.get("runner") or {}
    if status == "running" and _alive_here(runner_info):
        raise UserError(f"experiment {name!r} is still running (pid {runner_info.get('pid')})")
    raw = attrs.get(store.ATTR_EXPERIMENT)
    if not isinstance(raw, dict):
        raise UserError(f"experiment {name!r} has no stored experiment JSON; it was not created by aup")
    source = attrs.get(store.ATTR_EXPERIMENT_PATH) or name
    workingdir = attrs.get(store.ATTR_WORKINGDIR)
    loaded = validate_experiment({**raw, "workingdir": workingdir or raw.get("workingdir")}, source)
    loaded.raw = raw
    prepared = prepare(loaded)
    return ExperimentRunner(prepared, storage_url, resume_study=name, console=console, live=live).run()


def _alive_here(runner_info: dict[str, Any]) -> bool:
    pid = runner_info.get("pid")
    if runner_info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid that is not a Python process is not our runner
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"aup" in handle.read()
    except OSError:
        return True
