"""Test trial: value = x * h; reports intermediate values and metrics; behaviour tuned by env vars.

AUP_TEST_STEPS: number of intermediate results (x * h * (step+1) / steps), AUP_TEST_SLEEP: seconds
to sleep before the result (per step when steps are set). AUP_TEST_GATE: a file that trials numbered
AUP_TEST_GATE_FROM (default 0) or later wait for first, so that a test killing the runner reaches
"some trials done, the others running" deterministically (no timing window to hit).
"""
import os
import time

import aup


@aup.aup_args
def main(x, h=1, **extra):
    gate = os.environ.get("AUP_TEST_GATE")
    if gate and int(os.environ.get("AUP_TRIAL", "0")) >= int(os.environ.get("AUP_TEST_GATE_FROM", "0")):
        while not os.path.exists(gate):
            time.sleep(0.05)
    aup.log_metrics(accuracy=x / 10, cuda=os.environ.get("CUDA_VISIBLE_DEVICES"),
                    test_env=os.environ.get("AUP_TEST_ENV"), trial_env=os.environ.get("AUP_TRIAL"))
    steps = int(os.environ.get("AUP_TEST_STEPS", "0"))
    pause = float(os.environ.get("AUP_TEST_SLEEP", "0"))
    for step in range(steps):
        time.sleep(pause)
        aup.print_result(x * h * (step + 1) / steps)
    if not steps:
        time.sleep(pause)
    return x * h


if __name__ == "__main__":
    main()
