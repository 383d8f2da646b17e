"""Test trial with a size: score = x, model_bytes grows with x (every trial on the score/size front).

AUP_TEST_SLEEP: seconds to sleep before the result.
"""
import os
import time

import aup


@aup.aup_args
def main(x, **extra):
    time.sleep(float(os.environ.get("AUP_TEST_SLEEP", "0")))
    aup.log_metrics(model_bytes=int(1000 * x * x) + 10, param_count=int(100 * x), accuracy=x / 2,
                    baseline_model_bytes=1010, host_pid=os.getpid())
    return x


if __name__ == "__main__":
    main()
