"""One trial attempt as a Ray task: the same script contract as a local process, on any node.

The runner sees a ``RayTrialProcess`` exactly like a local ``TrialProcess``: both implement the
attempt contract (``aup.runner.contracts.TrialAttempt``: ``start``, ``poll``, ``new_results``,
``outcome``, ``terminate``/``kill``/``stop``) on the same output reader (``attempt_output``), and
:class:`RayResource` implements the resource contract. Behind it, a streaming Ray task
(``run_on_node``, in ``ray_node``) runs ``<script> <job config>`` as a child process on whichever
node Ray picks and yields what the child appends to its output and to its result channel, every
``STREAM_EVERY_S``.
The runner writes those bytes to the usual ``jobs/<trial>.out`` and ``.channel.jsonl`` files, so
result parsing, early stopping and the views work unchanged.

Files. When the node sees the runner's working directory (the same machine, or shared storage
mounted at the same path: the task checks that the job config file there holds this job), the script
runs in it and writes its files (saved models...) there directly. Otherwise the job config is written
to a scratch directory on the node, the script runs in the task's directory (Ray's
``runtime_env.working_dir`` if the experiment sets one) and a saved model folder
(``aup_models/<folder_name>``) comes back as a tar stream into the runner's working directory.

Failures. The task is never retried by Ray (``max_retries=0``): ``job_failure`` decides. A worker or
node that dies fails the attempt with Ray's reason, and the attempt's whole session (the script and
everything it started) dies with its worker (``attempt_guard``). ``terminate`` cancels the task (the
task ends the session), ``kill`` force-cancels it (the worker is killed; the guard ends the session).
On resume after a killed runner, ``RayResource.end_leftovers`` ends the interrupted attempts on every
node (and on this host, as the local resource does).

Cluster. ``connect`` joins ``resource_args.address`` or starts a local cluster sized to the
experiment (``n_parallel`` x ``num_cpus``), with no dashboard, Ray's files under the system temp dir,
and token authentication from a random per-run token held in the environment (Ray would otherwise
write ``~/.ray/auth_token``).
"""
from __future__ import annotations

import io
import os
import secrets
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from functools import lru_cache
from typing import Any, Sequence

from aup.errors import UserError
from aup.runner.attempt_output import AttemptOutcome, AttemptOutput
from aup.runner.contracts import ExecutionResource, Leftover
from aup.runner.orphans import SCRATCH_PREFIX
from aup.runner.ray_node import CHUNK_LIMIT, STREAM_EVERY_S, end_attempts, run_on_node

__all__ = ["CHUNK_LIMIT", "SCRATCH_PREFIX", "STREAM_EVERY_S", "RayResource", "RayTrialProcess", "connect",
           "end_leftovers"]

LOST_EXIT_CODE = -1  # the exit code recorded when the task (not the script) ended the attempt


# ---- the cluster ---------------------------------------------------------------------------------
def connect(address: str | None, *, local_cpus: float, local_gpus: float = 0,
            runtime_env: dict[str, Any] | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one; once per process."""
    if "RAY_AUTH_MODE" not in os.environ and not (address or os.environ.get("RAY_ADDRESS")):
        # a local cluster with token auth and no file in $HOME: the token lives in this process's
        # environment (set before Ray is imported, which is when Ray reads it)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                               "configure_logging": True}
    if runtime_env:
        options["runtime_env"] = runtime_env
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=max(1, int(round(local_cpus))), num_gpus=int(local_gpus), _node_ip_address="127.0.0.1",
                     _temp_dir=os.path.join(tempfile.gettempdir(), "ray"), **options)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types (ConnectionError, RuntimeError...)
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot connect to {where}: {text[0] if text else type(exc).__name__}") from None


# ---- the runner's side ---------------------------------------------------------------------------
@dataclass
class RayTrialProcess(AttemptOutput):
    """A trial attempt running as a Ray task (``aup.runner.contracts.TrialAttempt``)."""

    num_cpus: float = 1
    num_gpus: float = 0
    script_rel: str | None = None
    python: bool = False
    return_dirs: list[str] = field(default_factory=list)
    _generator: Any = None
    _exit: int | None = None
    _lost: str | None = None
    _done: bool = False
    _cancelled: bool = False  # ray.cancel was sent: the stream may end before the task does

    def start(self) -> None:
        self._open_files()
        self.log_path.touch()
        job_path = self.command[-1]
        spec = {"command": self.command[:-1], "job_path": job_path,
                "job_text": Path(job_path).read_text(encoding="utf-8"), "workingdir": str(self.workingdir),
                "env": self.env, "python": self.python, "script_rel": self.script_rel,
                "return_dirs": self.return_dirs}
        task = _remote_task().options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0,
                                                num_returns="streaming")
        self._generator = task.remote(spec)
        self.started = time.time()

    @property
    def pid(self) -> int | None:
        return None

    def poll(self) -> int | None:
        if not self._done:
            self._drain()
        if not self._done:
            self._cap_log()  # log_limit, as for a local trial
        if not self._done and self.timeout is not None and time.time() - self.started > self.timeout:
            self.kill(f"timed out after {self.timeout:g}s")
            self._wait(10.0)
        if not self._done:
            return None
        if self.ended is None:
            self.ended = time.time()
        return self._exit if self._exit is not None else LOST_EXIT_CODE

    def _drain(self) -> None:
        """Take every item the task has streamed so far; notice its end."""
        import ray
        from ray.exceptions import RayError

        if self._cancelled and not ray.wait([self._generator.completed()], timeout=0)[0]:
            # After a cancel Ray may call the stream finished while the task still runs (it is ending
            # its script); next_ready() would then block in ray.get until the task ends. Wait for it.
            return
        while not self._done:
            if self._generator.next_ready():
                try:
                    self._take(ray.get(next(self._generator)))
                except StopIteration:
                    self._done = True
                except RayError as exc:
                    self._lost = self._lost or _ray_reason(exc)
                    self._done = True
            elif self._generator.is_finished():
                self._done = True
            else:
                return

    def _take(self, item: dict[str, Any]) -> None:
        for name, path in (("log", self.log_path), ("channel", self.channel_path)):
            if item.get(name):
                with open(path, "ab") as handle:
                    handle.write(item[name])
        if "exit" in item:
            self._exit = int(item["exit"])
            if item.get("files"):
                _unpack(item["files"], self.workingdir)

    def _wait(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while not self._done and time.time() < deadline:
            self._drain()
            time.sleep(0.02)
        if not self._done:  # the cluster did not answer: give up on this task
            self._lost = self._lost or "the Ray task did not stop"
            self._done = True

    def terminate(self) -> None:
        self._cancel(force=False)

    def kill(self, reason: str | None = None) -> None:
        if reason and self.killed_reason is None:
            self.killed_reason = reason
        self._cancel(force=True)

    def _cancel(self, force: bool) -> None:
        import ray

        if self._generator is not None and not self._done:
            self._cancelled = True
            try:
                ray.cancel(self._generator, force=force)
            except Exception:  # already finished, or the cluster is gone
                pass

    def stop(self, reason: str, grace: float = 3.0) -> int:
        if self.killed_reason is None:
            self.killed_reason = reason
        if not self._done:
            self.terminate()
            if grace > 0:
                self._wait(grace)
            else:
                self._drain()
            if not self._done:
                self.kill()
                self._wait(10.0)
        code = self.poll()
        assert code is not None
        return code

    def outcome(self) -> AttemptOutcome:
        assert self._done
        outcome = self._read_outcome(self._exit)
        if self._exit is None:  # the task, not the script, ended the attempt
            outcome.reason = self.killed_reason or self._lost or "the Ray task ended without an exit code"
        return outcome


def _ray_reason(exc: Exception) -> str:
    """One line for why Ray ended the task (worker died, node died, cancelled...)."""
    from ray import exceptions as rex

    if isinstance(exc, rex.TaskCancelledError):
        return "cancelled"
    if isinstance(exc, rex.WorkerCrashedError):
        return "the Ray worker running the trial died"
    if isinstance(exc, rex.NodeDiedError):
        return "the Ray node running the trial died"
    if isinstance(exc, rex.OutOfMemoryError):
        return "the Ray worker was killed for running out of memory"
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"Ray: {name}: {text[:240]}" if text else f"Ray: {name}"


def _unpack(data: bytes, workingdir: Path) -> None:
    """Files a node sent back (saved models) into the working directory; nothing may land outside it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(workingdir, filter="data")


class RayResource(ExecutionResource):
    """``"resource": "ray"``: each attempt a Ray task (:class:`RayTrialProcess`) on a node Ray picks.

    Connects to the cluster when opened, i.e. when the runner is built: after every check of the
    experiment (a config error never starts Ray) and before the study is created or changed.
    Only the variables the experiment adds to the environment travel with the task; the node keeps
    its own ``PATH``, ``HOME``... and Ray sets ``CUDA_VISIBLE_DEVICES`` from ``num_gpus``.
    """

    def __init__(self, loaded: Any) -> None:
        self.exp = loaded.experiment
        self.args = self.exp.resource_args
        self.script_rel = _script_relative(loaded.command, Path(loaded.workingdir))
        connect(self.args.address, local_cpus=self.exp.n_parallel * self.args.num_cpus,
                local_gpus=self.exp.n_parallel * self.args.num_gpus, runtime_env=self.args.runtime_env)

    def attempt(self, **arguments: Any) -> RayTrialProcess:
        command = arguments["command"]
        env = {**self.exp.runtime_args.env,
               **{k: v for k, v in arguments["env"].items() if os.environ.get(k) != v}}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        job_config = _read_job(Path(command[-1]))
        folder = job_config.get("folder_name") if job_config.get("save_model") else None
        return RayTrialProcess(**{**arguments, "env": env}, num_cpus=self.args.num_cpus, num_gpus=self.args.num_gpus,
                               script_rel=self.script_rel, python=command[0] == sys.executable,
                               return_dirs=[f"aup_models/{folder}"] if folder else [])

    def end_leftovers(self, leftovers: Sequence[Leftover]) -> int:
        """On every live node of the cluster (by process key), then on this host."""
        keys = [item.process_key for item in leftovers if item.process_key]
        ended = end_leftovers(keys) if keys else 0
        return ended + super().end_leftovers(leftovers)


def end_leftovers(keys: Sequence[str], timeout: float = 60.0) -> int:
    """Resume after a killed runner: end these attempts' processes on every live node of the cluster.

    A worker that died takes its attempt with it (``attempt_guard``); this covers a worker that is
    still running an orphaned attempt. Returns how many processes were signalled; a node that does
    not answer within ``timeout`` is skipped (its attempts end with their worker)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(end_attempts)
    pending = [task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(list(keys)) for node in ray.nodes() if node.get("Alive")]
    done, _ = ray.wait(pending, num_returns=len(pending), timeout=timeout)
    return sum(ray.get(done))


def _script_relative(command: list[str], workingdir: Path) -> str | None:
    """The script's path relative to the working dir (found again under a node's runtime_env dir)."""
    for token in command[:2]:
        path = Path(token)
        if path.is_file() and path != Path(sys.executable):
            try:
                return str(path.resolve().relative_to(workingdir.resolve()))
            except ValueError:
                return path.name
    return None


@lru_cache(maxsize=None)
def _remote_task() -> Any:
    import ray

    return ray.remote(run_on_node)


def _read_job(path: Path) -> dict[str, Any]:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
