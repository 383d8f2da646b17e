"""Test trial for multi_res_labels: prints [x, 2x, 3x] (or a wrong count when AUP_TEST_COUNT is set)."""
import os
import sys

import aup

x = aup.BasicConfig().load(sys.argv[1])["x"]
count = int(os.environ.get("AUP_TEST_COUNT", "3"))
aup.print_result([x * (i + 1) for i in range(count)])
