#!/usr/bin/env bash
# The test command: bootstrap the environment, then run the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q "$@"
