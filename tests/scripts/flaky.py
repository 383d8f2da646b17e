"""Test trial that fails its first attempt (marker file next to the job config), then succeeds."""
import os
import sys

import aup

config = aup.BasicConfig().load(sys.argv[1])
marker = sys.argv[1] + ".tried"
if not os.path.exists(marker):
    open(marker, "w").close()
    raise SystemExit("first attempt fails on purpose")
aup.print_result(config["x"])
