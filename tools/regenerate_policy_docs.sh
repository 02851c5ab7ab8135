#!/bin/sh
# Regenerate the simulation results in docs/policy.md and the plots in docs/img/.
# Needs matplotlib: pip install -e '.[plot]'. Deterministic: same code, same numbers.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" -m bolina_scaler.simulator.docs "$@"
