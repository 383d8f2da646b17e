"""Opening a run: the study (new or resumed), the lease that makes this runner its only owner,
the sampler and the proposer.

Order matters on resume: the lease is taken before anything in the study changes, so a second
``aup resume`` of the same study stops with one line and leaves the first one's trials alone.
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aup import store
from aup.errors import UserError
from aup.runner import join
from aup.runner.lease import Lease
from aup.runner.recovery import recover_interrupted, requeue

if TYPE_CHECKING:
    import optuna

    from aup.runner.contracts import ExecutionResource
    from aup.runner.prepare import Prepared
    from aup.proposer_ext.contract import ProposerContract


@dataclass
class Session:
    study: "optuna.Study"
    proposer: "ProposerContract"
    lease: Lease


def lease_name(study_name: str) -> str:
    """The lease that owns a study's proposer loop."""
    return f"runner:{study_name}"


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed of a run that continues a study holding ``n_trials`` trials.

    A seeded sampler restarted with its original seed replays the configurations it already
    proposed; a seed derived from the seed and the study's progress continues with new ones while
    staying reproducible (same experiment, same history -> same seed). A fresh run keeps ``seed``.
    """
    if n_trials == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{n_trials}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def open_session(prepared: "Prepared", storage_url: str, resume_study: str | None,
                 resource: "ExecutionResource") -> Session:
    """Create or load the study, take its lease, recover a killed run's leftovers, build the proposer.

    ``resource`` ends a killed run's trial processes wherever it ran them (this host, Ray nodes)."""
    import aup.proposer_ext as ext

    exp = prepared.loaded.experiment
    storage = store.open_storage(storage_url)
    if resume_study is None:
        study = store.create_experiment_study(storage, exp.name, exp.directions, sampler=prepared.sampler_factory(),
                                              pruner=prepared.pruner, unique=True)
        lease = _take_lease(storage, study.study_name)
        _record_new(study, prepared)
        requeued: list[tuple[int, dict[str, Any]]] = []
    else:
        study = store.load_experiment_study(storage, resume_study, pruner=prepared.pruner)
        lease = _take_lease(storage, study.study_name)
        if study.user_attrs.get(store.ATTR_STATUS) == "finished":
            lease.release()
            raise UserError(f"experiment {resume_study!r} already finished; nothing to resume")
        study.sampler = prepared.sampler_factory(resumed_seed(exp.random_seed, len(study.trials)))
        requeued = recover_interrupted(study, resource, keep=frozenset(join.live_workers(storage, study.study_name)))
        study.set_user_attr("resumed", [*study.user_attrs.get("resumed", []), store.now_iso()])
    study.set_user_attr(store.ATTR_STATUS, "running")
    study.set_user_attr(store.ATTR_ENDED, None)
    study.set_user_attr("runner", {"pid": os.getpid(), "host": socket.gethostname()})
    own = ext.build_proposer((exp.proposer or "").lower(), exp.proposer_options, prepared.builder.space, study,
                             exp.n_samples, exp.random_seed)
    proposer = join.shared_budget(own, study, exp, storage_url)  # other runners may join
    for number, params in requeued:
        requeue(study, proposer, number, params)
    return Session(study, proposer, lease)


def join_session(prepared: "Prepared", storage_url: str, study_name: str) -> Session:
    """One more worker on the running study ``study_name`` (see ``aup.runner.join``).

    The worker holds a lease of its own (``worker:<study>:<id>``), so the store knows which
    workers are alive; the owner's lease stays with the runner that started the study.
    """
    import aup.proposer_ext as ext

    exp = prepared.loaded.experiment
    storage = store.open_storage(storage_url)
    study = store.load_experiment_study(storage, study_name, pruner=prepared.pruner)
    lease = Lease(storage, join.worker_lease_name(study_name))
    lease.acquire()
    study.sampler = prepared.sampler_factory(join.worker_seed())
    join.register_worker(study)
    proposer = ext.build_proposer((exp.proposer or "").lower(), exp.proposer_options, prepared.builder.space, study,
                                  exp.n_samples, exp.random_seed)
    return Session(study, join.shared_budget(proposer, study, exp, storage_url), lease)


def _take_lease(storage: Any, study_name: str) -> Lease:
    lease = Lease(storage, lease_name(study_name))
    if not lease.acquire():
        holder = lease.holder()
        who = holder.describe() if holder else "another runner"
        raise UserError(f"experiment {study_name!r} is already running ({who}); wait for it to end or stop it first")
    return lease


def _record_new(study: "optuna.Study", prepared: "Prepared") -> None:
    loaded = prepared.loaded
    study.set_user_attr(store.ATTR_EXPERIMENT, loaded.raw)
    study.set_user_attr(store.ATTR_EXPERIMENT_PATH, os.path.abspath(loaded.path))
    study.set_user_attr(store.ATTR_WORKINGDIR, str(loaded.workingdir))
    study.set_user_attr(store.ATTR_STARTED, store.now_iso())
