#!/usr/bin/env bash
# One-GPU check of edlm: the gpu tests (in the background), end to end on a small corpus (train MDLM and AR
# ~60 s each, eval, sample MDLM and EDLM-AR, eval-gen, the EDLM likelihood bound), then the throughput and
# sampling benchmarks alone on the GPU. Measured on one H100 (2026-11-27, sequential version): tests 220 s,
# end-to-end chain about 190 s, throughput 130 s (two torch.compile warm-ups) + 25 s, sampling about 90 s
# for both samplers (ancestral only here: about 50 s); with the tests beside the chain, about 7 minutes. Every step runs even if an earlier one failed; each step's
# exit code, seconds and last lines go into a one-page markdown report:
#   bench/results/gpu/report.md, and $OUT/gpu_report.md when $OUT is set.
# Usage: bash scripts/gpu_check.sh            (from the checkout; PYTHON=python3 by default)
#        GPU_CHECK_QUICK=1 DEVICE=cpu bash scripts/gpu_check.sh   (seconds-long smoke test of the script itself)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
QUICK="${GPU_CHECK_QUICK:-0}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
RES="bench/results/gpu"
[ "${GPU_CHECK_QUICK:-0}" = 1 ] && RES="${GPU_CHECK_WORK:-out/gpu_check}/results"  # a smoke test keeps the repo clean
WORK="${GPU_CHECK_WORK:-out/gpu_check}"
LOGS="$WORK/logs"
DATA="${GPU_DATA:-data/gpu}"
rm -rf "$WORK" && mkdir -p "$LOGS" "$RES"
REPORT="$RES/report.md"
STARTED=$(date +%s)
SUMMARY="$WORK/summary.md"
DETAILS="$WORK/details.md"
: > "$SUMMARY"; : > "$DETAILS"

if [ "$QUICK" = 1 ]; then
  MODEL=(--preset char-tiny); TRAIN_MIN=0.1; NUM=4; LEN=32; TP=(--presets char-tiny --steps 2)
  SP=(--num 2 --length 32 --steps 4,8); EVAL_SEQ=8
else
  MODEL=(--preset char-small model.n_layers=8 model.hidden=512 model.n_heads=8 train.batch_size=128
         train.eval_every=100000 train.ckpt_every=100000 train.warmup_steps=100)
  TRAIN_MIN=1; NUM=64; LEN=256; TP=(--presets text8-paper --steps 10 --batch-sizes 64,256)
  SP=(--samplers ancestral); EVAL_SEQ=512  # cached vs ancestral: bench/results/gpu/sampling.md
fi

# step NAME TIMEOUT_S COMMAND...: run it, log it, never stop the script.
step() {
  local name="$1" limit="$2"; shift 2
  local log="$LOGS/$name.log" t0 rc
  t0=$(date +%s)
  echo "== $name: $*" | tee "$log"
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  record "$name" "$rc" "$(( $(date +%s) - t0 ))" "$log"
  echo "== $name: exit $rc in $(( $(date +%s) - t0 ))s"
  return 0
}

record() {  # NAME RC SECONDS LOG
  local status="ok"
  [ "$2" = 0 ] || status="**FAILED**"
  [ "$2" = 124 ] || [ "$2" = 137 ] && status="**TIMED OUT**"
  echo "| $1 | $2 | $3 | $status |" >> "$SUMMARY"
  { echo; echo "<details><summary>$1 (exit $2, $3 s)</summary>"; echo; echo '```'
    grep -v '^\s*$' "$4" | grep -v 'it/s\]\|s/it\]' | tail -n 12 | cut -c1-220
    echo '```'; echo "</details>"; } >> "$DETAILS"
}

EDLM=("$PY" -m edlm)

# 0. environment
{
  "$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      + (f"GPU {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
         if torch.cuda.is_available() else "no CUDA device"))
EOF
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
} > "$WORK/env.txt" 2>&1
cat "$WORK/env.txt"

# 1. corpus: data/gpu if the caller prepared it, else Python's own stdlib docstrings (no network needed)
if [ ! -f "$DATA/meta.json" ]; then
  DATA="$WORK/data"
  step corpus 120 "$PY" - "$WORK/stdlib_docstrings.txt" <<'EOF'
import ast, sys, sysconfig
from pathlib import Path
root, out, parts, size = Path(sysconfig.get_paths()["stdlib"]), Path(sys.argv[1]), [], 0
for path in sorted(root.rglob("*.py")):
    if "test" in path.parts or "site-packages" in path.parts:
        continue
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
    except (SyntaxError, ValueError):
        continue
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                parts.append(" ".join(doc.split()))
                size += len(parts[-1])
    if size > 6_000_000:
        break
out.write_text("\n".join(parts))
print(f"{size:,} characters of docstrings from {root}")
EOF
  step corpus-prepare 120 "${EDLM[@]}" data prepare --corpus files --path "$WORK/stdlib_docstrings.txt" --out "$DATA"
fi

# 2. the gpu tests run in the background while the end-to-end chain runs (both only check correctness;
#    the benchmarks in 4. run alone on the GPU afterwards)
if [ "$DEVICE" = cpu ]; then
  echo "| pytest -m gpu | - | 0 | skipped (DEVICE=cpu) |" >> "$SUMMARY"
else
  step pytest-gpu 300 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider --durations=6 &
fi

# 3. end to end: train MDLM and AR together for ~60 s, then eval, sample, judge, the EDLM likelihood bound
MDLM="$WORK/runs/mdlm"; AR="$WORK/runs/ar"
step train-mdlm 200 "${EDLM[@]}" train --data "$DATA" --model mdlm --out "$MDLM" --max-minutes "$TRAIN_MIN" \
  --max-steps 100000 --device "$DEVICE" --no-progress "${MODEL[@]}" &
TRAIN_MDLM=$!
step train-ar 200 "${EDLM[@]}" train --data "$DATA" --model ar --out "$AR" --max-minutes "$TRAIN_MIN" \
  --max-steps 100000 --device "$DEVICE" --no-progress "${MODEL[@]}"
wait "$TRAIN_MDLM"
step eval-mdlm 120 "${EDLM[@]}" eval --run "$MDLM" --data "$DATA" --device "$DEVICE" --max-sequences "$EVAL_SEQ" \
  --batch-size 128
step eval-ar 120 "${EDLM[@]}" eval --run "$AR" --data "$DATA" --device "$DEVICE" --max-sequences "$EVAL_SEQ" --batch-size 128
step eval-edlm-bound 120 "${EDLM[@]}" eval --run "$MDLM" --data "$DATA" --energy "ar:$AR" --device "$DEVICE" \
  --max-sequences 8 --steps 32 --batch-size 8
step sample-mdlm 120 "${EDLM[@]}" sample --run "$MDLM" --num "$NUM" --batch-size "$NUM" --length "$LEN" --steps 256 \
  --device "$DEVICE" --out "$WORK/samples-mdlm.json"
step sample-edlm-ar 180 "${EDLM[@]}" sample --run "$MDLM" --num "$NUM" --batch-size "$NUM" --length "$LEN" --steps 256 \
  --energy "ar:$AR" --k 4 --window 0.2 --device "$DEVICE" --out "$WORK/samples-edlm-ar.json"
# the only AR model here is also the energy: the judge's numbers for EDLM-AR are flattered (noted in the report)
step eval-gen-mdlm 120 "${EDLM[@]}" eval-gen --samples "$WORK/samples-mdlm.json" --judge "run:$AR" --device "$DEVICE"
step eval-gen-edlm-ar 120 "${EDLM[@]}" eval-gen --samples "$WORK/samples-edlm-ar.json" --judge "run:$AR" \
  --device "$DEVICE"
wait  # the gpu tests

# 4. benchmarks
step bench-throughput 240 "${EDLM[@]}" bench throughput "${TP[@]}" --device "$DEVICE" --out "$RES"
cp "$RES/throughput.md" "$RES/throughput-text8-paper.md" 2>/dev/null
if [ "$QUICK" != 1 ]; then
  step bench-throughput-small 90 "${EDLM[@]}" bench throughput --presets char-small --steps 10 --batch-sizes 128,512 \
    --no-compile --device "$DEVICE" --out "$WORK/tp-small"
  cp "$WORK/tp-small/throughput.md" "$RES/throughput-char-small.md" 2>/dev/null
fi
step bench-sampling 180 "${EDLM[@]}" bench sampling "${SP[@]}" --device "$DEVICE" --out "$RES"

# 5. the report
TOTAL=$(( $(date +%s) - STARTED ))
{
  echo "# edlm GPU check"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), ${TOTAL} s in all."
  echo
  sed 's/^/    /' "$WORK/env.txt"
  echo
  echo "| step | exit | seconds | status |"
  echo "|---|---|---|---|"
  cat "$SUMMARY"
  echo
  echo "Training: ${MODEL[*]}, --max-minutes $TRAIN_MIN (MDLM, AR and the gpu tests share the GPU, so the"
  echo "training rates below are lower than alone). The judge of eval-gen is the AR model that is also the"
  echo "EDLM-AR energy, which flatters EDLM-AR's generative perplexity."
  echo
  for name in train-mdlm train-ar; do
    tail -n 1 "$LOGS/$name.log" 2>/dev/null | sed "s/^/- $name: /"
  done
  for name in eval-mdlm eval-ar eval-gen-mdlm eval-gen-edlm-ar; do
    grep -m1 -i "bpc\|gen PPL" "$LOGS/$name.log" 2>/dev/null | cut -c1-200 | sed "s/^/- $name: /"
  done
  for file in throughput-text8-paper.md throughput-char-small.md sampling.md; do
    [ -f "$RES/$file" ] && { echo; echo "## ${file%.md}"; echo; cat "$RES/$file"; }
  done
  echo
  echo "## Step logs (last lines)"
  cat "$DETAILS"
} > "$REPORT"
[ -n "${OUT:-}" ] && cp "$REPORT" "$OUT/gpu_report.md" && cp -r "$LOGS" "$OUT/gpu_logs" 2>/dev/null
echo "wrote $REPORT (${TOTAL} s)"
