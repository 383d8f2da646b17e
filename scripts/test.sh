#!/usr/bin/env bash
# Installs aup with its test extras (torch pinned to the CPU build) and runs the whole test suite.
# pytest's exit status 5 ("no tests collected") is turned into a failure on purpose.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt -e ".[test]" || exit 1
python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$status"
