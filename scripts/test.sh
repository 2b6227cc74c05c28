#!/usr/bin/env bash
# The whole test suite on a fresh machine: a virtual environment with scbundle and its test
# dependencies, then pytest. CI (.ci/run) calls exactly this. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# the real services the integration tests talk to (openssh-server, PAM OATH for the test site)
if [ "$(id -u)" = 0 ]; then
  bash scripts/install-test-services.sh
else
  echo "test.sh: not root: the ssh test site (tests/link, tests/site) will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
