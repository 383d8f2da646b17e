"""Processes of a trial attempt that outlived whatever was watching them, found and ended.

A trial's processes carry its ``AUP_PROCESS_KEY`` in their environment (recorded before the attempt
starts, inherited by everything it spawns, whatever its process group or session). This module has
no imports beyond the standard library: it runs in the runner (on resume), in the attempt guard
and in a Ray task on every node.
"""
from __future__ import annotations

import os
import signal

PROCESS_KEY_ENV = "AUP_PROCESS_KEY"  # in the environment of a trial and everything it starts


def kill_orphans(job_config_path: str | None, process_key: str | None = None) -> int:
    """Stop trial processes a killed runner left behind; returns how many were signalled.

    A process belongs to the trial when its environment holds the trial's ``AUP_PROCESS_KEY`` (the
    key is recorded before the process starts and inherited by everything it spawns, whatever its
    process group) or, for trials recorded without a key, when its command line holds the job path.
    """
    if not os.path.isdir("/proc") or not (job_config_path or process_key):
        return 0
    key = f"{PROCESS_KEY_ENV}={process_key}".encode() if process_key else None
    return _kill_matching(key, job_config_path.encode() if job_config_path else None)


def kill_with_env(name: str, value: str) -> int:
    """End every process (but this one) whose environment holds ``name=value``; how many."""
    if not os.path.isdir("/proc") or not value:
        return 0
    return _kill_matching(f"{name}={value}".encode(), None)


def _kill_matching(key: bytes | None, needle: bytes | None) -> int:
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _belongs(entry.name, key, needle):
            _kill_group_or_process(int(entry.name))
            killed += 1
    return killed


def _belongs(pid: str, key: bytes | None, needle: bytes | None) -> bool:
    try:
        if key is not None:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                return key in handle.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:  # gone, or another user's process
        return False


def _kill_group_or_process(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # a trial leads its own process group
            os.killpg(pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError):
        pass
    _quiet_kill(pid)


def _quiet_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts as alive; a
    zombie, dead but not yet reaped by its parent, does not: a SIGKILLed Ray worker stays one until
    the raylet reaps it, and its leftovers must be cleared meanwhile)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc (not Linux) or the process just went: not a zombie we can see
        return False


SCRATCH_PREFIX = "aup-trial-"  # + the Ray worker's pid: a trial's scratch folder on a node


def clear_scratch_of(worker: int) -> None:
    """Remove the scratch folders a dead Ray worker left (its own cleanup never ran)."""
    import shutil
    import tempfile
    from pathlib import Path

    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{worker}-*"):
        shutil.rmtree(folder, ignore_errors=True)
