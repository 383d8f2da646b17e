"""The node's side of a Ray trial attempt: the task body that runs on a Ray worker.

``run_on_node`` runs ``<script> <job config>`` in a session of its own, under a guard that ends the
whole session if this worker dies (``attempt_guard``), and yields what the script appends to its
output and its result channel every ``STREAM_EVERY_S``, at most ``CHUNK_LIMIT`` bytes per item; at the end it sends back the saved-model folders as a tar
stream when the node does not share the runner's working directory. Nothing here imports Ray: Ray
pickles ``run_on_node`` by its module path (``aup.runner.ray_node``), so that module must be
importable on every node. The runner's side is ``ray_launcher``.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from aup.runner.launcher import KERAS_HOME_REL, MPLCONFIGDIR_REL, pid_alive
from aup.runner.orphans import SCRATCH_PREFIX, kill_orphans  # SCRATCH_PREFIX + worker pid: a dead worker's
# scratch dir is cleared by its attempt guard, else by the next task on the node

STREAM_EVERY_S = 0.1
CHUNK_LIMIT = 1 << 20  # at most 1 MiB of output per streamed item


def run_on_node(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Run the trial script on this node, yielding ``{"log": bytes, "channel": bytes}`` as it runs and
    finally ``{"exit": code, "files": tar bytes | None}``."""
    _clear_dead_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    shared = _holds(Path(spec["job_path"]), spec["job_text"])
    if shared:
        job_path, cwd = spec["job_path"], spec["workingdir"]
    else:
        job_path = str(scratch / Path(spec["job_path"]).name)
        Path(job_path).write_text(spec["job_text"], encoding="utf-8")
        cwd = os.getcwd()
    log_path, channel_path = scratch / "trial.out", scratch / "trial.channel.jsonl"
    env = {**os.environ, **spec["env"], "AUP_CHANNEL": str(channel_path)}
    for variable, relative in (("KERAS_HOME", KERAS_HOME_REL), ("MPLCONFIGDIR", MPLCONFIGDIR_REL)):
        if not shared and env.get(variable) == os.path.join(spec["workingdir"], relative):
            env[variable] = os.path.join(cwd, relative)  # aup's default, under this node's copy
    command = _node_command(spec, cwd) + [job_path]
    if not _startable(command[0], cwd, env.get("PATH")):
        yield {"log": f"aup: cannot start {command[0]} on this node: no such program\n".encode(),
               "exit": 127, "files": None}  # the script or interpreter is missing on this node
        _remove(scratch)
        return
    child = None
    try:
        with open(log_path, "wb") as log:
            child = subprocess.Popen(guarded(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        readers = {"log": _Reader(log_path), "channel": _Reader(channel_path)}
        while child.poll() is None:
            time.sleep(STREAM_EVERY_S)
            chunk = {name: reader.read() for name, reader in readers.items()}
            if any(chunk.values()):
                yield chunk
        while True:  # what is left after the exit, in pieces of at most CHUNK_LIMIT
            chunk = {name: reader.read() for name, reader in readers.items()}
            if not any(chunk.values()):
                break
            yield chunk
        files = None if shared else _pack(Path(cwd), spec.get("return_dirs", []))
        yield {"exit": child.returncode, "files": files}
    finally:  # cancelled (KeyboardInterrupt from ray.cancel) or finished: no leftovers on the node
        if child is not None:
            _kill_group(child.pid)
        _remove(scratch)


def _clear_dead_scratch() -> None:
    """Scratch directories of workers that died mid-trial (their ``finally`` never ran)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(folder)


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def _node_command(spec: dict[str, Any], cwd: str) -> list[str]:
    """The script tokens for this node: its own Python, the script where this node has it."""
    command = list(spec["command"])
    start = 0
    if spec.get("python"):
        command[0] = sys.executable
        start = 1
    if start < len(command) and not os.path.exists(command[start]) and spec.get("script_rel"):
        candidate = os.path.join(cwd, spec["script_rel"])
        if os.path.exists(candidate):
            command[start] = candidate
    return command


def _startable(program: str, cwd: str, path: str | None) -> bool:
    if os.sep in program:
        return os.access(os.path.join(cwd, program), os.X_OK)
    return shutil.which(program, path=path) is not None


def end_attempts(keys: list[str]) -> int:
    """The Ray task run on every node by ``aup resume``: ends the processes of these attempts (their
    ``AUP_PROCESS_KEY``) still alive on this node; returns how many were signalled."""
    return sum(kill_orphans(None, key) for key in keys)


def guarded(command: list[str]) -> list[str]:
    """``command`` run by ``aup.runner.attempt_guard`` on behalf of this process (the Ray worker): the
    guard leads the attempt's session and ends all of it if the worker dies. It finds ``aup`` where this
    process found it, without changing the script's own ``sys.path`` or ``PYTHONPATH``."""
    root = str(Path(__file__).resolve().parents[2])
    bootstrap = (f"import sys; sys.path.insert(0, {root!r}); from aup.runner.attempt_guard import main; "
                 "sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", bootstrap, str(os.getpid()), "--", *command]


class _Reader:
    """New bytes of a growing file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(CHUNK_LIMIT)
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


def _pack(base: Path, folders: list[str]) -> bytes | None:
    present = [f for f in folders if (base / f).is_dir()]
    if not present:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in present:
            tar.add(base / folder, arcname=folder)
    return buffer.getvalue()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
