"""Test trial with a size: score = x, model_bytes grows with x (every trial on the score/size front).

AUP_TEST_SLEEP: seconds to sleep before the result; AUP_TEST_GATE: a file to wait for first.
"""
import os
import time

import aup


@aup.aup_args
def main(x, **extra):
    gate = os.environ.get("AUP_TEST_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)
    time.sleep(float(os.environ.get("AUP_TEST_SLEEP", "0")))
    aup.log_metrics(model_bytes=int(1000 * x * x) + 10, param_count=int(100 * x), accuracy=x / 2,
                    baseline_model_bytes=1010, host_pid=os.getpid())
    return x


if __name__ == "__main__":
    main()
