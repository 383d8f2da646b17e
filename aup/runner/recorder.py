"""Recording: how a trial's attempts, results and metrics become its record in the study.

The runner holds one ``Recorder`` per run. It reports intermediate values (``trial.report``) and
asks the pruner, turns a finished attempt into the values to tell, writes the metric attributes
and the attempt history, sets the experiment's constraints and tells the study how the trial ended
(docs/design.md "Per-trial record"). The loop decides *when*; this module decides *what* is written.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from aup import store
from aup.constraints import constraint_values, parse_constraints
from aup.metrics import QUANT_SENSITIVITY, SIZE_METRICS, SIZE_MISSING
from aup.runner.launcher import AttemptOutcome
from aup.runner.recovery import requeue
from aup.runner.state import INTERRUPTED, RUNNER_ATTRS, STOP_GRACE_S, ActiveTrial, finite, iso

if TYPE_CHECKING:
    import optuna

    from aup.config import Experiment
    from aup.proposer_ext.contract import ProposerContract
    from aup.runner.progress import Progress


class Recorder:
    """Writes trials to ``study``; ``release(active, state)`` is called when a trial leaves its slot."""

    def __init__(self, exp: "Experiment", study: "optuna.Study", proposer: "ProposerContract", progress: "Progress",
                 release: Callable[[ActiveTrial, Any], None]) -> None:
        self.exp = exp
        self.study = study
        self.proposer = proposer
        self.progress = progress
        self.release = release
        self.labels = list(exp.resource_args.multi_res_labels or [])
        self.single = len(exp.objectives) == 1
        self.early_stop = exp.resource_args.early_stop is not None
        # several objectives: aup's own policy decides (optuna's trial.report takes one number)
        self.stop_policy = _stop_policy(exp)
        # intermediate results go to the study as they come when something watches them live
        self.live_reports = self.early_stop or exp.resource_args.track_intermediate_results
        self.constraints = parse_constraints(exp.constraints or {})

    # ---- results -----------------------------------------------------------------------------
    def report(self, active: ActiveTrial, results: list[Any], may_prune: bool = False) -> bool:
        """Record intermediate results; True if the pruner says to stop the (running) trial."""
        usable = [r for r in results if isinstance(r[0] if isinstance(r, list) else r, (int, float))]
        values = [float(r[0] if isinstance(r, list) else r) for r in usable]
        active.intermediate.extend(values)
        if not self.single:
            return self._rungs(active, usable, may_prune)
        step_base = len(active.intermediate) - len(values)
        reported = False
        for offset, value in enumerate(values):
            step = step_base + offset
            if step < active.steps_reported or not finite(value):
                continue
            active.trial.report(value, step)
            active.steps_reported = step + 1
            reported = True
        return may_prune and reported and self.early_stop and active.trial.should_prune()

    def _rungs(self, active: ActiveTrial, results: list[Any], may_prune: bool) -> bool:
        """Several objectives: record the trial's vector at each rung it reached; True to stop it."""
        if self.stop_policy is None:
            return False
        step_base = len(active.intermediate) - len(results)
        stop = False
        for offset, result in enumerate(results):
            step = step_base + offset + 1  # the n-th intermediate result is step n
            if step <= active.steps_reported:
                continue
            active.steps_reported = step
            decision = self.stop_policy.observe(self.study, active.trial, step, self.rung_vector(active, result),
                                                decide=may_prune and not stop)
            if decision.stop:
                active.stop_reason = decision.reason
                stop = True
        return stop

    def rung_vector(self, active: ActiveTrial, result: Any) -> list[float | None]:
        """One value per objective as known now: the result's own values, else the last reported metric."""
        numbers = result if isinstance(result, list) else [result]
        named = {"score": numbers[0], **dict(zip(self.labels, numbers[1:]))}
        metrics = active.process.metrics_so_far()
        vector: list[float | None] = []
        for objective in self.exp.objectives:
            value = named.get(objective, metrics.get(objective))
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            vector.append(float(value) if ok else None)
        return vector

    def objective_values(self, outcome: AttemptOutcome) -> tuple[list[float], str | None]:
        """The values to tell (one per objective) or the reason the attempt is unusable."""
        if outcome.reason is not None:
            return [], outcome.reason
        final = outcome.final
        numbers = final if isinstance(final, list) else [final]
        if self.labels and len(numbers) != 1 + len(self.labels):
            return [], (f"expected {1 + len(self.labels)} values (score, {', '.join(self.labels)}), "
                        f"got {len(numbers)}")
        named = {"score": float(numbers[0]), **dict(zip(self.labels, map(float, numbers[1:])))}
        values = []
        for objective in self.exp.objectives:
            value = named.get(objective, outcome.metrics.get(objective))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return [], f"no value for the objective {objective!r} (report it with aup.log_metrics)"
            if not finite(float(value)):
                return [], f"{objective} is {value}"
            values.append(float(value))
        return values, None

    def only_final(self, outcome: AttemptOutcome) -> bool:
        """A trial whose one result is its final value has no intermediate values to store.

        (One database write less per trial. With ``track_intermediate_results`` or early stopping,
        every result is an intermediate result, as in Auptimizer.)
        """
        return len(outcome.results) == 1 and not self.live_reports

    def metric_attrs(self, active: ActiveTrial, outcome: AttemptOutcome) -> dict[str, Any]:
        """Reported metrics, ``score`` and the ``multi_res_labels`` values, as trial user attributes."""
        attrs = {name: value for name, value in outcome.metrics.items() if name not in RUNNER_ATTRS}
        final = outcome.final
        if final is not None:
            numbers = final if isinstance(final, list) else [final]
            attrs["score"] = numbers[0]
            attrs.update(zip(self.labels, numbers[1:]))
        if not self.single and active.intermediate:
            attrs["intermediate_results"] = active.intermediate
        return attrs

    def size_check(self, active: ActiveTrial, attrs: dict[str, Any]) -> dict[str, Any]:
        """A compression trial that ends with no size metric and no word why (its script never
        created an aup compressor, or its report never arrived) gets the reason here: one line at the
        end of its log and ``size_missing`` in the trial."""
        if self.exp.compression is None or SIZE_MISSING in attrs or any(m in attrs for m in SIZE_METRICS):
            return {}
        reason = ("the script reported no size metrics (measure the model with an aup compressor: "
                  "aup.create_compressor, or report param_count / model_bytes with aup.log_metrics)")
        try:
            with open(active.process.log_path, "a", encoding="utf-8") as log:
                log.write(f"\naup: no size metrics for this trial: {reason}\n")
        except OSError:
            pass
        return {SIZE_MISSING: reason}

    # ---- attempts and attributes ---------------------------------------------------------------
    def attempt_record(self, active: ActiveTrial, outcome: AttemptOutcome, reason: str | None) -> list[dict[str, Any]]:
        record = active.attempts[-1]
        record.update(end=iso(active.process.ended or time.time()), exit_code=outcome.exit_code, reason=reason)
        return active.attempts

    def record_attempt(self, active: ActiveTrial, outcome: AttemptOutcome, reason: str | None) -> None:
        active.trial.set_user_attr("attempts", self.attempt_record(active, outcome, reason))

    def set_attrs(self, active: ActiveTrial, attrs: dict[str, Any]) -> None:
        store.set_trial_user_attrs(self.study, active.trial, attrs)
        profile = attrs.get(QUANT_SENSITIVITY)
        if isinstance(profile, dict) and QUANT_SENSITIVITY not in self.study.user_attrs:
            self.study.set_user_attr(QUANT_SENSITIVITY, profile)  # experiment metadata, shown by ``aup show``

    def set_constraints(self, active: ActiveTrial, recorded: dict[str, Any], values: list[float]) -> None:
        """Experiment ``constraints`` -> ``trial.set_constraint`` (feasible when <= 0) over the recorded metrics."""
        if not self.constraints:
            return
        scores = constraint_values(self.constraints, {**recorded, **dict(zip(self.exp.objectives, values))})
        for key, value in scores.items():
            active.trial.set_constraint(key, value)
        active.trial.set_user_attr("feasible", all(v <= 0 for v in scores.values()))

    # ---- how a trial ends ---------------------------------------------------------------------
    def finished(self, active: ActiveTrial, outcome: AttemptOutcome, results: list[Any], values: list[float],
                 reason: str | None) -> None:
        """Write a finished trial: intermediate values, attempts, metrics, constraints, state."""
        from optuna.trial import TrialState

        if results and not self.only_final(outcome):
            self.report(active, results)
        attrs = {**self.metric_attrs(active, outcome), "attempts": self.attempt_record(active, outcome, reason)}
        if reason is None:
            attrs.update(self.size_check(active, attrs))
            self.set_attrs(active, attrs)
            self.set_constraints(active, attrs, values)  # before tell, as optuna 5 wants
            self.tell(active, TrialState.COMPLETE, values, values[0] if self.single else values, None)
        else:
            self.set_attrs(active, {**attrs, "status_reason": reason})
            self.tell(active, TrialState.FAIL, None, None, reason)

    def unrecordable(self, active: ActiveTrial, reason: str) -> None:
        """Recording a finished trial failed: mark it FAIL with the reason, as far as the store allows."""
        from optuna.trial import TrialState

        for write in (lambda: self.set_attrs(active, {"status_reason": reason[:2000]}),
                      lambda: self.study.tell(active.trial, state=TrialState.FAIL)):
            try:
                write()
            except Exception:  # noqa: BLE001 - e.g. the trial was already told
                pass
        self.release(active, TrialState.FAIL)
        self.proposer.complete(active.trial.number, TrialState.FAIL, None)
        self.progress.finished(active.trial.number, "FAIL", None, active.params, reason)

    def pruned(self, active: ActiveTrial) -> None:
        """Stop a running trial the pruner rejected and record it PRUNED with its last value."""
        from optuna.trial import TrialState

        step = active.steps_reported - 1
        reason = active.stop_reason or f"pruned at step {step} by early stopping"
        active.process.stop(reason, grace=STOP_GRACE_S)
        outcome = active.process.outcome()
        attrs = {**self.metric_attrs(active, outcome), "attempts": self.attempt_record(active, outcome, reason),
                 "status_reason": reason}
        last = active.intermediate[-1] if active.intermediate else None
        if last is not None:
            attrs["score"] = last
        self.set_attrs(active, attrs)
        self.tell(active, TrialState.PRUNED, None, last, reason)

    def interrupted(self, active: ActiveTrial, exit_code: int | None, reason: str) -> None:
        """A trial the runner stopped: FAIL "interrupted", its configuration queued again."""
        from optuna.trial import TrialState

        active.attempts[-1].update(end=iso(time.time()), exit_code=exit_code, reason=reason)
        self.set_attrs(active, {"attempts": active.attempts, "status_reason": reason, INTERRUPTED: True})
        self.study.tell(active.trial, state=TrialState.FAIL)
        requeue(self.study, self.proposer, active.trial.number, active.params)
        self.release(active, TrialState.FAIL)

    def tell(self, active: ActiveTrial, state: Any, values: list[float] | None, value: Any, reason: str | None) -> None:
        self.study.tell(active.trial, values=values if values else None, state=state)
        self.release(active, state)
        self.proposer.complete(active.trial.number, state, value)
        self.progress.finished(active.trial.number, state.name, value, active.params, reason)


def _stop_policy(exp: "Experiment") -> Any:
    """The multi-objective early-stopping policy of the experiment, or None (validated in prepare)."""
    if len(exp.objectives) < 2 or exp.resource_args.early_stop is None:
        return None
    from aup.proposer_ext import build_stop_policy

    return build_stop_policy(exp.resource_args.early_stop, [d == "maximize" for d in exp.directions])
