"""Test trial whose first attempt waits to be killed with its Ray worker; the retry reports x.

The first attempt starts a child (``sleep 124``, its pid next to the job config as ``.sleep``) and
writes the pid of the Ray worker that runs it (the parent of aup's attempt guard) as ``.worker``.
"""
import os
import subprocess
import sys
import time

import aup


def ray_worker_pid() -> int:
    parent = os.getppid()
    with open(f"/proc/{parent}/cmdline", "rb") as handle:
        if b"attempt_guard" not in handle.read():
            return parent
    with open(f"/proc/{parent}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def publish(path: str, value: int) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(str(value))
    os.replace(path + ".tmp", path)


config = aup.BasicConfig().load(sys.argv[1])
marker = sys.argv[1] + ".worker"
if not os.path.exists(marker):
    child = subprocess.Popen(["sleep", "124"])
    publish(sys.argv[1] + ".sleep", child.pid)
    publish(marker, ray_worker_pid())
    time.sleep(120)
aup.print_result(config["x"])
