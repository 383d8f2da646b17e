"""Several runners on one experiment: workers that join a running study in a shared store.

A joined runner (``aup run EXP.json --join`` or ``aup worker NAME``) loads the running study, builds
its own sampler on it and runs its own trials: Optuna's RDB storage hands every ``ask`` a new trial,
so no two runners ever run the same trial, and samplers that keep their state in the study (random,
TPE, GP, CMA-ES, QMC, NSGA-II: Optuna designs them for distributed optimisation) see every
runner's results. Interrupted trials a runner queues again (WAITING) are picked up by whichever
runner asks next.

``n_samples`` is the experiment's, not each runner's: :class:`SharedBudget` counts the trials of
every runner in the store before and after each ``ask``, and a trial asked after another runner took
the last slot is not run (it is recorded FAIL, marked interrupted, with the reason).

Proposers that keep state in the runner (``sequence``'s grid order, hyperband/bohb brackets) cannot
be joined: a second runner would repeat their configurations. A joined runner needs a server store
(PostgreSQL, MySQL) reachable from every machine; an SQLite file is one machine's.

Status: the study is marked finished by the last runner to finish (the one that sees no running
trial left); a worker's Ctrl-C or failure stops that worker only. Each worker holds a lease of its
own (``worker:<study>:<host:pid>:<id>``), so ``aup resume`` after the owner died (the trials it left
RUNNING keep the study from finishing) recovers the dead runner's trials and leaves those of live
workers alone.
"""
from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from aup import store
from aup.errors import UserError
from aup.proposer_ext.common import WAIT, Proposal, Wait
from aup.proposer_ext.contract import ProposerContract, Value
from aup.proposer_ext.registry import ROWS
from aup.safe_text import shell_command

if TYPE_CHECKING:  # pragma: no cover - typing only
    from optuna.trial import TrialState

EXCESS_REASON = "not run: n_samples was reached by other runners"
WORKERS_ATTR = "workers"


def is_shared(url: str) -> bool:
    """A server store that several machines can share (not an SQLite file)."""
    return not url.startswith("sqlite")


def check_joinable(proposer: str, url: str) -> None:
    """UserError (one line) when runners cannot join this experiment."""
    check_shared(url)
    if not joinable(proposer):
        raise UserError(f"the {proposer!r} proposer keeps its state in the runner that started the experiment, "
                        f"so other runners cannot join it (joinable: {', '.join(sorted(joinable_names()))})")


def joinable_names() -> list[str]:
    """The proposers other runners can join (their registry row: every state in the study)."""
    return [name for name, row in ROWS.items() if row.joinable]


def joinable(proposer: str) -> bool:
    row = ROWS.get(proposer.lower())
    return row is not None and row.joinable


def check_shared(url: str) -> None:
    """UserError unless ``url`` is a store that several runners can share."""
    if not is_shared(url):
        raise UserError("--join needs a results store on a server that every runner reaches "
                        "(--storage postgresql+psycopg://USER@HOST/DB); an SQLite file belongs to one runner")


def running_study(storage: Any, name: str, exact: bool = False) -> str:
    """The study ``name`` (``exact``) or the latest study of experiment ``name``, if it is running;
    else a UserError saying what to do."""
    latest = name if exact and name in store.study_names(storage) else store.latest_study_for(storage, name)
    if latest is None or exact and latest != name:
        raise UserError(f"--join: no run of the experiment {name!r} in the storage; start it first with aup run")
    import optuna

    status = optuna.load_study(study_name=latest, storage=storage).user_attrs.get(store.ATTR_STATUS)
    if status != "running":
        raise UserError(f"--join: the latest run of {name!r} ({latest!r}) is {status}, not running "
                        f"(continue it with: {shell_command('aup', 'resume', latest)})")
    return latest


def worker_seed() -> int:
    """A seed of its own per worker: two runners with the experiment's seed would propose the same points."""
    return secrets.randbelow(2**31 - 1)


def runner_id() -> str:
    """``host:pid`` of this runner, recorded on each trial it runs in a shared study."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_lease_name(study_name: str) -> str:
    """A lease of this worker's own: the store then knows which workers of a study are alive."""
    return f"{_worker_prefix(study_name)}{runner_id()}:{secrets.token_hex(4)}"


def _worker_prefix(study_name: str) -> str:
    return f"worker:{study_name}:"


def live_workers(storage: Any, study_name: str) -> set[str]:
    """``host:pid`` of the workers of ``study_name`` whose lease is alive (their trials are theirs)."""
    from aup.runner.lease import LeaseError, live_holders

    try:
        return {f"{h.host}:{h.pid}" for h in live_holders(storage, _worker_prefix(study_name))}
    except LeaseError:
        return set()


def shared_budget(proposer: ProposerContract, study: Any, exp: Any, url: str) -> ProposerContract:
    """``proposer`` counting ``n_samples`` over every runner, where runners can join; else as is."""
    if is_shared(url) and joinable(exp.proposer or "") and exp.n_samples:
        return SharedBudget(proposer, study, exp.n_samples)
    return proposer


def register_worker(study: Any) -> None:
    """Note this runner in the study (informative: ``aup show`` and the dashboard list it)."""
    from aup.store import now_iso

    workers = list(study.user_attrs.get(WORKERS_ATTR, []))
    workers.append({"host": socket.gethostname(), "pid": os.getpid(), "joined": now_iso()})
    study.set_user_attr(WORKERS_ATTR, workers)


class SharedBudget(ProposerContract):
    """A proposer whose ``n_samples`` counts the trials of every runner on the study.

    It wraps the runner's own proposer and implements the proposer contract explicitly: proposing
    is the wrapped proposer's, cut off once the runners together have used ``n_samples``; the rest
    is the wrapped proposer's as it is."""

    def __init__(self, inner: ProposerContract, study: Any, n_samples: int) -> None:
        self.inner, self.study, self.n_samples = inner, study, n_samples
        self.name = inner.name
        self._running: set[int] = set()  # this runner's proposed trials not yet completed

    @property
    def total(self) -> int | None:
        return self.inner.total

    @property
    def finished(self) -> bool:
        """The wrapped proposer is done, or the runners together used up ``n_samples`` (and none of
        this runner's trials is still running)."""
        if self._running:
            return False
        return self.inner.finished or store.trials_in_budget(self.study) >= self.n_samples

    @property
    def requeues_interrupted(self) -> bool:
        return self.inner.requeues_interrupted

    def complete(self, trial_number: int, state: "TrialState", value: Value) -> None:
        self._running.discard(trial_number)
        self.inner.complete(trial_number, state, value)

    def propose(self) -> Proposal | Wait | None:
        if store.trials_in_budget(self.study) >= self.n_samples:
            return None
        proposal = self.inner.propose()
        if proposal is None or proposal is WAIT:
            return proposal
        assert isinstance(proposal, Proposal)
        trial = proposal.trial
        if store.trials_in_budget(self.study, below_number=trial.number) >= self.n_samples:
            self._drop(trial)  # another runner asked for the last slot between our count and our ask
            return None
        self._running.add(trial.number)
        return proposal

    def _drop(self, trial: Any) -> None:
        from optuna.trial import TrialState

        store.set_trial_user_attrs(self.study, trial, {"status_reason": EXCESS_REASON, "interrupted": True})
        self.study.tell(trial, state=TrialState.FAIL)
        self.inner.complete(trial.number, TrialState.FAIL, None)


def others_running(study: Any) -> int:
    """Trials still running on other runners (this runner's are all told when it finishes)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
