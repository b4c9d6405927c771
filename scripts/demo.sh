#!/usr/bin/env bash
# The main job: bootstrap, then `edlm demo` (corpus -> MDLM, AR energy, judge -> BPC, samples, MDLM vs EDLM).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
edlm demo "$@"
