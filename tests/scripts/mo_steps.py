"""Test trial for multi-objective early stopping: its size first, then AUP_TEST_STEPS accuracies.

model_bytes = 100 / x is reported before the first result (as a compressor does after compress()),
so a larger x is better in both objectives; AUP_TEST_NO_SIZE=1 reports no size at all.
"""
import os
import time

import aup


@aup.aup_args
def main(x, **extra):
    if os.environ.get("AUP_TEST_NO_SIZE") != "1":
        aup.log_metrics(model_bytes=100.0 / x)
    steps = int(os.environ.get("AUP_TEST_STEPS", "3"))
    for step in range(1, steps + 1):
        time.sleep(float(os.environ.get("AUP_TEST_SLEEP", "0")))
        aup.print_result(x * step / steps)
    aup.log_metrics(model_bytes=100.0 / x)  # the final report (the early one may be missing)
    return None


if __name__ == "__main__":
    main()
