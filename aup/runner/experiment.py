"""The experiment loop: proposer -> trial processes -> store, on Optuna's ask/tell.

One thread does everything: it asks the proposer for trials while slots are free, starts each trial
as a process (``launcher.TrialProcess``, or a Ray task: ``ray_launcher``), polls them with a short
adaptive sleep, reports intermediate results (``trial.report``) and asks the pruner, and tells the
study how each trial ended. No worker threads means no shared-state races (Auptimizer ran callbacks on executor
threads and mutated ``os.environ`` from them), and signals only set flags.

The modules around the loop: ``prepare`` (every check on an in-memory study before anything is
written), ``recorder`` (what a trial's record holds: docs/design.md "Per-trial record"), ``recovery``
(what a killed runner left behind), ``state`` (the running trial shared by all of them),
``trial_env`` (each trial's environment and GPU), ``run_end`` (marking the study, the summary, the
exit code) and ``saved_models`` (``save_model``).

Failure policy (``job_failure``): an unusable attempt is re-run with the same job config up to
``job_retries`` times; then the trial FAILs with its reason. ``ignore_fail: false`` stops the
experiment at the first failed trial (status failed), ``true`` continues.

Stop rule (``"stop": "first_feasible"``): once a completed trial meets every constraint, no new trial
starts (running ones finish); finished trials are then recorded before the free slots are refilled,
so the rule never starts a trial it would not have. A resumed run whose rule already fired starts none.

Interruption: SIGINT/SIGTERM stop every running trial, record it FAIL "interrupted" and enqueue its
params again, so ``aup resume`` re-runs exactly the unfinished work. A runner killed with SIGKILL
leaves RUNNING trials behind; resume treats them the same way.
"""
from __future__ import annotations

import json
import select
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aup import store
from aup.runner.jobconfig import JobConfigBuilder
from aup.proposer_ext.common import Wait
from aup.runner import join
from aup.runner.launcher import AttemptOutcome, open_resource
from aup.runner.prepare import Prepared, prepare
from aup.runner.progress import Progress
from aup.runner.recorder import Recorder
from aup.runner.recovery import stored_experiment
from aup.runner.run_end import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, STOP_ATTR, RunResult, finish_run
from aup.runner.seeding import seed_plan, seed_trials
from aup.runner.session import join_session, open_session
from aup.runner.state import INTERRUPTED, PROCESS_KEY, STOP_GRACE_S, ActiveTrial, iso, jsonable, remove_trial_files
from aup.runner.trial_env import TrialEnvironment
from aup.safe_text import hide_secrets

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from aup.config import LoadedExperiment
    from aup.proposer_ext.common import Proposal

__all__ = ["ExperimentRunner", "Prepared", "RunResult", "prepare", "resume_experiment", "run_experiment",
           "join_experiment", "EXIT_OK", "EXIT_FAILED", "EXIT_INTERRUPTED"]

POLL_MIN_S, POLL_MAX_S = 0.002, 0.025


class ExperimentRunner:
    """Runs (or resumes) one experiment to the end; ``run()`` returns a RunResult with the exit code."""

    def __init__(self, prepared: Prepared, storage_url: str, *, resume_study: str | None = None,
                 console: "Console | None" = None, live: bool | None = None, join_study: str | None = None) -> None:
        from aup.safe_text import output_console

        self.prepared = prepared
        self.loaded = prepared.loaded
        self.exp = prepared.loaded.experiment
        self.storage_url = storage_url
        self.resume_study = resume_study
        self.join_study = join_study  # a running study this runner joins as one more worker (join.py)
        self._shared = False  # several runners may share the study (set when it is opened)
        self.console = console or output_console()
        self.live = live
        self.workingdir = prepared.loaded.workingdir
        self.jobs_dir = self.workingdir / "jobs"
        self.active: list[ActiveTrial] = []
        self._pending: list[tuple[ActiveTrial, AttemptOutcome, list[Any], list[float], str | None]] = []
        self._interrupt = 0
        self._stop_reason: str | None = None
        self._retries = self.exp.job_failure.job_retries
        self._single = len(self.exp.objectives) == 1
        self._env = TrialEnvironment(self.exp, self.workingdir)  # base env + GPU pool
        limit = self.exp.runtime_args.log_limit_mb
        self._log_limit = None if limit is None else int(limit * 1024 * 1024)
        self._resource = open_resource(self.loaded)  # local processes, Ray tasks...: aup.resources
        self._first_feasible = self.exp.stop == "first_feasible"
        self._target_met: int | None = None  # the first trial meeting every constraint (stop rule)
        self._seed_plan: list[Any] = []

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.join_study is not None:
            session = join_session(self.prepared, self.storage_url, self.join_study)
        else:
            session = open_session(self.prepared, self.storage_url, self.resume_study, self._resource)
        study, proposer, self.lease = session.study, session.proposer, session.lease
        self._shared = isinstance(proposer, join.SharedBudget)
        self.study, self.proposer = study, proposer
        self.slug = store.slug(study.study_name)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # the trials' library caches (ONNX Runtime's, see aup.caches) go to <workingdir>/.aup/cache,
        # next to KERAS_HOME and MPLCONFIGDIR, instead of an aup-cache folder left in the temp dir
        (self.workingdir / ".aup").mkdir(mode=0o700, exist_ok=True)
        maximize = self.exp.directions[0] == "maximize"
        total = proposer.total
        progress = Progress(study.study_name, console=self.console, live=self.live, total=total,
                            maximize=maximize, multi_objective=not self._single)
        self.progress = progress
        self.recorder = Recorder(self.exp, study, proposer, progress, self._release)
        progress.count_existing(study.get_trials(deepcopy=False), INTERRUPTED)
        self._check_target(study.get_trials(deepcopy=False))  # a resumed run whose stop rule already fired
        self._seed_plan = seed_plan(self.prepared.builder)  # "allocation": {"mode": "seed"}
        self._seed()
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
            self.lease.release()
            raise
        finally:
            self._restore_signals(previous)
        try:
            return finish_run(study, self.exp, proposer, status=status, reason=reason, shared=self._shared,
                              joined=self.join_study is not None, single=self._single, workingdir=self.workingdir,
                              console=self.console, storage_url=self.storage_url)
        finally:
            self.lease.release()

    def _loop(self) -> None:
        """Poll, refill free slots, then write down what finished (so a new trial starts first)."""
        exhausted = False
        delay = POLL_MIN_S
        while True:
            busy = self._poll_active()
            if not self.lease.heartbeat() and self._stop_reason is None:
                self._stop_reason = "another runner took this experiment over (this runner's lease had expired)"
            if self._interrupt or self._stop_reason:
                self._record_pending()
                reason = INTERRUPTED if self._interrupt else f"{INTERRUPTED}: {self._stop_reason}"
                self._stop_all(reason)
                return
            if self._pending and (self._first_feasible or self._seed_plan):
                self._record_pending()  # the stop rule / the seeds decide what starts next
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
            self._wait(delay)

    def _wait(self, delay: float) -> None:
        """Sleep ``delay``, waking as soon as a trial process ends (its pidfd turns readable): a
        finished trial's slot is refilled at once instead of after the growing poll interval."""
        fds = [fd for fd in (a.process.exit_fd for a in self.active) if fd is not None]
        if not fds:
            time.sleep(delay)
            return
        try:
            select.select(fds, [], [], delay)
        except (OSError, ValueError):  # a descriptor closed meanwhile: the next poll sees why
            time.sleep(min(delay, POLL_MIN_S))

    def _fill_slots(self, exhausted: bool) -> tuple[bool, bool, bool]:
        """Start proposals while slots (and devices) are free; returns (exhausted, waiting, launched)."""
        waiting = launched = False
        if self._target_met is not None:
            return True, False, False  # stop rule "first_feasible": no new trials, running ones finish
        while not exhausted and len(self.active) < self.exp.n_parallel and self._env.device_free(self.active):
            proposal = self.proposer.propose()
            if proposal is None:
                exhausted = True
            elif isinstance(proposal, Wait):
                waiting = True
                break
            else:
                self._launch(proposal)
                launched = True
        return exhausted, waiting, launched

    # ---- launching ---------------------------------------------------------------------------
    def _launch(self, proposal: "Proposal") -> None:
        trial = proposal.trial
        trial_id = f"{self.slug}-{trial.number}"
        params = dict(proposal.params)
        job = self.prepared.builder.build(params)
        job.update(proposal.extras)
        budget = proposal.budget
        if budget is not None:
            job["n_iterations"] = budget
        job["folder_name"] = trial_id  # every trial its own output folder, so parallel trials never share files
        if self.exp.resource_args.save_model:
            job["save_model"] = True
        job = json.loads(json.dumps(job, default=jsonable))  # exactly what the file will hold
        job_path = self.jobs_dir / f"{trial_id}.json"
        with open(job_path, "w", encoding="utf-8") as handle:
            json.dump(job, handle, indent=2)
        device = self._env.take_device(self.active)
        active = ActiveTrial(trial, params, trial_id, job, job_path, process=None, device=device,  # type: ignore[arg-type]
                             process_key=uuid.uuid4().hex)
        # written before the process starts: a runner killed right after the start leaves a record
        # by which the next resume finds and stops the orphan (orphans.kill_orphans)
        attrs = {"job_config": job, "job_config_path": str(job_path), "log_path": str(self._log_path(active)),
                 PROCESS_KEY: active.process_key}
        if self._shared:  # which of the runners sharing the study ran it
            attrs["runner"] = join.runner_id()
        if budget is not None:
            attrs["budget"] = budget
        self.recorder.set_attrs(active, attrs)
        self._start_attempt(active, record=False)
        self.active.append(active)

    def _release(self, active: ActiveTrial, state: Any) -> None:
        """A trial leaves its slot (called by the recorder once the trial is told)."""
        if active in self.active:
            self.active.remove(active)
        if self.exp.runtime_args.prune_job_files and state.name in ("COMPLETE", "PRUNED"):
            remove_trial_files(active)

    def _log_path(self, active: ActiveTrial) -> Path:
        suffix = "" if active.attempt == 0 else f".{active.attempt}"
        return self.jobs_dir / f"{active.trial_id}{suffix}.out"

    def _start_attempt(self, active: ActiveTrial, record: bool = True) -> None:
        log_path = self._log_path(active)
        env = self._env.for_attempt(active, self.study.study_name)
        process = self._resource.attempt(
            command=[*self.loaded.command, str(active.job_path)], workingdir=self.workingdir, env=env,
            log_path=log_path, channel_path=log_path.with_suffix(".channel.jsonl"),
            timeout=self.exp.runtime_args.timeout, log_limit=self._log_limit,
        )
        active.process = process
        process.start()
        if record:
            active.trial.set_user_attr("log_path", str(log_path))
        # recorded when the attempt ends (one write less per trial)
        active.attempts.append({"number": active.attempt, "start": iso(process.started), "end": None,
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
                if fresh and not self.recorder.live_reports:
                    active.held.extend(fresh)  # written when the trial ends
                elif fresh:
                    busy = True
                    if self.recorder.report(active, fresh, may_prune=True):
                        self.recorder.pruned(active)
                continue
            busy = True
            self._attempt_ended(active, fresh)
        return busy

    def _attempt_ended(self, active: ActiveTrial, fresh: list[Any]) -> None:
        """Retry an unusable attempt right away, else queue the trial for recording."""
        outcome = active.process.outcome()
        results = active.held + fresh + active.process.unreported()
        active.held = []
        values, reason = self.recorder.objective_values(outcome)
        if reason is not None and outcome.mismatch is not None:
            reason = self._mismatch_stop(active, outcome.mismatch)
        elif reason is not None and active.attempt < self._retries and not self._interrupt:
            self.recorder.report(active, results)  # not a pruning decision: this attempt is over
            self.recorder.record_attempt(active, outcome, reason)
            self.progress.retrying(active.trial.number, active.attempt, reason)
            active.attempt += 1
            active.intermediate = []
            self._start_attempt(active)
            return
        self.active.remove(active)
        if reason is not None and not self.exp.job_failure.ignore_fail and self._stop_reason is None:
            self._stop_reason = f"trial {active.trial.number} failed: {reason}"
        self._pending.append((active, outcome, results, values, reason))

    def _mismatch_stop(self, active: ActiveTrial, record: dict[str, Any]) -> str:
        """The config_list does not fit the model: every trial would fail the same way, so stop now."""
        from aup.compression.model_check import mismatch_line
        from aup.compression.search_space import CompressionJobConfigBuilder

        builder = self.prepared.builder  # the user's entries are known for a compression section only
        line = mismatch_line(builder if isinstance(builder, CompressionJobConfigBuilder) else None,
                             active.job_config, record)
        if self._stop_reason is None:
            self._stop_reason = f"trial {active.trial.number}: {line}"
        return line

    def _record_pending(self) -> None:
        """Write finished trials to the study (after the free slots were refilled)."""
        pending, self._pending = self._pending, []
        for active, outcome, results, values, reason in pending:
            try:
                self.recorder.finished(active, outcome, results, values, reason)
            except Exception as exc:  # noqa: BLE001 - whatever a trial reported, it fails that trial only
                if store.is_lock_error(exc):
                    raise
                self.recorder.unrecordable(active, f"could not record the result ({type(exc).__name__}: {hide_secrets(str(exc))})")
        if pending and self._first_feasible and self._target_met is None:
            self._check_target(self.study.get_trials(deepcopy=False))  # all trials: joined runners' too
        if pending:
            self._seed()

    def _seed(self) -> None:
        """Seed mode of per-layer allocation: queue the allocated trials once the profile is known."""
        if not self._seed_plan:
            return
        trials = self.study.get_trials(deepcopy=False)
        total = self.proposer.total
        room = None if total is None else total - sum(t.state.name != "WAITING" for t in trials)
        seeds = seed_trials(self.study, self._seed_plan, trials, room)
        if seeds is None:
            return
        self._seed_plan = []
        if seeds:
            self.progress.message(f"allocation: queued {len(seeds)} trials seeded with the per-layer allocation")

    def _check_target(self, trials: list[Any]) -> None:
        """Stop rule ``"stop": "first_feasible"``: note the first completed trial meeting every constraint."""
        if not self._first_feasible or self._target_met is not None:
            return
        met = [t.number for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("feasible") is True]
        if met:
            self._target_met = min(met)
            if not self.study.user_attrs.get(STOP_ATTR):
                self.study.set_user_attr(STOP_ATTR, f"first_feasible: trial {self._target_met} met the constraints")
            running = f"; {len(self.active)} running trial(s) finish" if self.active else ""
            self.progress.message(f"stop rule first_feasible: trial {self._target_met} met every constraint; "
                                  f"no new trials{running}")

    # ---- stopping ----------------------------------------------------------------------------
    def _stop_all(self, reason: str) -> None:
        """Stop every running trial, record it FAIL "interrupted" and queue its params again."""
        for active in self.active:
            active.process.terminate()
        deadline = time.time() + STOP_GRACE_S
        for active in list(self.active):
            # a second Ctrl-C cuts the grace period short
            while active.process.poll() is None and time.time() < deadline and self._interrupt < 2:
                time.sleep(0.01)
            code = active.process.stop(reason, grace=0)
            self.recorder.interrupted(active, code, reason)
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
    loaded = stored_experiment(store.open_storage(storage_url, create=False), name)
    prepared = prepare(loaded)
    return ExperimentRunner(prepared, storage_url, resume_study=name, console=console, live=live).run()


def join_experiment(storage_url: str, *, name: str | None = None, loaded: "LoadedExperiment | None" = None,
                    console: "Console | None" = None, live: bool | None = None) -> RunResult:
    """Run one more worker on a running study: by study ``name`` (its stored JSON), or the latest
    running study of ``loaded``'s experiment. See ``aup.runner.join``."""
    if loaded is not None:  # refused before anything is opened: a refused command writes nothing
        join.check_joinable(loaded.experiment.proposer or "", storage_url)
    join.check_shared(storage_url)
    storage = store.open_storage(storage_url, create=False)  # joining needs a store with a running study
    if loaded is None:
        assert name is not None
        loaded = stored_experiment(storage, name, joining=True)
        join.check_joinable(loaded.experiment.proposer or "", storage_url)
    study_name = join.running_study(storage, name or loaded.experiment.name, exact=name is not None)
    prepared = prepare(loaded)
    return ExperimentRunner(prepared, storage_url, join_study=study_name, console=console, live=live).run()
