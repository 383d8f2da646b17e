#!/usr/bin/env bash
# Runs the test suite against the newest releases of every dependency (the lock in constraints.txt
# ignored, except torch: its CPU build stays pinned so the resolve does not pull the CUDA wheels).
# Installs into its own venv (AUP_LATEST_VENV, default .latest-venv) so the locked one is untouched.
# Use it before refreshing the lock, or on a schedule to learn early what a new release breaks.
# Arguments go to pytest, e.g. `bash scripts/test-latest.sh -m "not slow" -x`.
set -uo pipefail
cd "$(dirname "$0")/.."
venv="${AUP_LATEST_VENV:-.latest-venv}"
python3 -m venv "$venv" || exit 1
torch_only="$(mktemp)"
trap 'rm -f "$torch_only"' EXIT
grep -E '^torch==' constraints.txt > "$torch_only"
"$venv/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -c "$torch_only" -e ".[test]" || exit 1
"$venv/bin/python" -m pip freeze --exclude-editable > "$venv/installed.txt"
echo "test-latest: testing against the versions in $venv/installed.txt" >&2
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$status"
