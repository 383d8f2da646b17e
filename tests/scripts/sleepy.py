"""Test trial that runs for a long time (timeouts, Ctrl-C); also spawns a child to check group kill."""
import os
import subprocess
import sys
import time

import aup

config = aup.BasicConfig().load(sys.argv[1])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1] + ".child", "w") as handle:
    handle.write(str(child.pid))
if not os.path.exists("fast"):  # a test creates "fast" in the working dir to end sleeps early
    time.sleep(float(config.get("sleep", 60)))
aup.print_result(config.get("x", 1.0))
