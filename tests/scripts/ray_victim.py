"""Test trial whose first attempt waits to be killed with its Ray worker; the retry reports x.

The first attempt writes its parent's pid (the Ray worker that started it) next to the job config.
"""
import os
import sys
import time

import aup

config = aup.BasicConfig().load(sys.argv[1])
marker = sys.argv[1] + ".worker"
if not os.path.exists(marker):
    with open(marker + ".tmp", "w") as handle:
        handle.write(str(os.getppid()))
    os.replace(marker + ".tmp", marker)
    time.sleep(120)
aup.print_result(config["x"])
