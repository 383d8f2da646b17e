"""Test trial: records the environment variables a library cache would read, returns x."""
import os

import aup


@aup.aup_args
def main(x, **extra):
    aup.log_metrics(keras_home=os.environ.get("KERAS_HOME"), mplconfigdir=os.environ.get("MPLCONFIGDIR"))
    return x


if __name__ == "__main__":
    main()
