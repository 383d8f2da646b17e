#!/usr/bin/env bash
# Installs aup with its test extras (torch pinned to the CPU build) and runs the whole test suite.
# pytest's exit status 5 ("no tests collected") is turned into a failure on purpose.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt -e ".[test]" || exit 1
python -m pytest -q -p no:cacheprovider "$@"
status=$?
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "test.sh: the dashboard browser test was skipped: no Chromium on this machine" \
         "(CI installs Debian's: sudo apt-get install -y chromium; then run this script again)" >&2
fi
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$status"
