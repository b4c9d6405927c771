#!/usr/bin/env bash
# One-GPU check of edlm, written to end inside its own deadline (GPU_CHECK_BUDGET_S, 420 s) on one H100/H200, and a
# one-page markdown report: bench/results/gpu/report.md (and, when $OUT is set, $OUT/gpu_report.md plus two
# archives, gpu_results.tar.gz and gpu_logs.tar.gz: three files, inside the device tool's eight).
#
# Phase A, correctness (everything at once; the GPU is shared, so nothing here is timed):
#   - every test marked `gpu`, in three pytest processes (the CLI tests that share trained runs, the
#     torch.compile test, and the rest);
#   - end to end: train MDLM and AR for ~60 s each (together), then eval (MDLM, AR, the EDLM bound), sample
#     (MDLM, EDLM-AR), then eval-gen of both sample sets;
#   - owt-paper (12 x 768, L = 1024, GPT-2 BPE) trained for 3 minutes on the prepared GPT-2 corpus, then evaluated:
#     a finite validation bpc (it shares the GPU with the rest of phase A, so it takes fewer steps than alone);
#   - warm-ups of the throughput benchmarks, which fill torch.compile's on-disk cache.
# Phase B, measurements (one at a time, the GPU alone), most important first:
#   1. bench step-cost: 8 x 512 char model, 64 x 256, T = 256 (first 64 steps timed): ms per step of ancestral,
#      cached, IS k = 4 and reveal-set IS k = 4, 16, eager vs CUDA graphs, against one forward pass of the batch;
#   2. bench vs-mdlm: owt-paper shape, batch 16, T = 1024 (first 64 steps timed): tokens/s of edlm's cached
#      sampler (eager, CUDA graphs) against MDLM's own loop on the same weights;
#   3. bench throughput of owt-paper (batch 16, eager levers; tokens/s and fraction of the bf16 peak measured in
#      the same run);
#   4. the text8-paper and char-small training throughput of earlier rounds (the first to be cut by the deadline).
# A step that would start after the deadline is skipped, a running step is stopped at it; the report lists both.
# Every step runs even if an earlier one failed.
#
# Prepared data (ignored folders, carried to the GPU machine; the machine has no openai-whisper, so the GPT-2
# corpus is tokenised here). From the checkout, in the project's environment:
#   python -m edlm data prepare --corpus shakespeare --out data/gpu --no-progress
#   python -m edlm data prepare --corpus shakespeare --tokenizer gpt2 --out data/gpu-gpt2 --no-progress
# The device call (the device tool's run; about 7 minutes of device time with the machine's start):
#   command:   GPU_DATA=data/gpu GPU_DATA_OWT=data/gpu-gpt2 bash scripts/gpu_check.sh
#   carry:     ["data/gpu", "data/gpu-gpt2"]
#   timeout_s: 600
# then commit bench/results/gpu/ from the archives that come back ($OUT/gpu_results.tar.gz holds it).
#
# Usage: bash scripts/gpu_check.sh            (from the checkout; PYTHON=python3 by default)
#        GPU_DATA=data/gpu GPU_DATA_OWT=data/gpu-gpt2 bash scripts/gpu_check.sh   (prepared corpora; without
#            GPU_DATA Python's stdlib docstrings are used, without GPU_DATA_OWT the owt-paper run is skipped)
#        GPU_CHECK_QUICK=1 DEVICE=cpu bash scripts/gpu_check.sh   (a short smoke test of the script itself)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
QUICK="${GPU_CHECK_QUICK:-0}"
BUDGET="${GPU_CHECK_BUDGET_S:-420}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK="${GPU_CHECK_WORK:-out/gpu_check}"
RES="bench/results/gpu"
[ "$QUICK" = 1 ] && RES="$WORK/results"  # a smoke test keeps the repository clean
LOGS="$WORK/logs"
DATA="${GPU_DATA:-data/gpu}"
DATA_OWT="${GPU_DATA_OWT:-data/gpu-gpt2}"
rm -rf "$WORK" && mkdir -p "$LOGS" "$RES"
REPORT="$RES/report.md"
STARTED=$(date +%s)
DEADLINE=$(( STARTED + BUDGET ))
SUMMARY="$WORK/summary.md"
DETAILS="$WORK/details.md"
: > "$SUMMARY"; : > "$DETAILS"

if [ "$QUICK" = 1 ]; then
  MODEL=(--preset char-tiny train.max_steps=30); TRAIN_MIN=0.1; NUM=4; LEN=32; EVAL_SEQ=8
  TP=(--presets char-tiny --steps 2 --blocks 2); TP_SMALL=(--presets char-tiny --steps 2 --blocks 2)
  TP_OWT=(--presets char-tiny --steps 2 --blocks 2)
  OWT=(--preset owt-paper model.n_layers=1 model.hidden=32 model.n_heads=2 model.cond_dim=16 model.seq_len=64
       train.batch_size=4 train.warmup_steps=2 train.eval_every=100000 train.ckpt_every=100000 --max-steps 3)
  OWT_MIN=0.1; OWT_EVAL=(--max-sequences 4 --batch-size 4)
  SC=(--preset char-tiny --num 4 --length 16 --steps 8 --prefix 4 --repeats 2 --k 2 --reveal-k 2 --fills 2)
  VM=(--preset char-tiny --num 2 --length 16 --steps 8 --prefix 4 --repeats 2)
else
  MODEL=(--preset char-small model.n_layers=8 model.hidden=512 model.n_heads=8 train.batch_size=128
         train.eval_every=100000 train.ckpt_every=100000 train.warmup_steps=100)
  TRAIN_MIN=1; NUM=64; LEN=256; EVAL_SEQ=512
  TP=(--presets text8-paper --steps 10 --blocks 3 --batch-sizes 64,256)
  TP_SMALL=(--presets char-small --steps 10 --blocks 3 --batch-sizes 128,512 --cuda-graphs)
  TP_OWT=(--presets owt-paper --batch-sizes 16 --no-compile --steps 4 --blocks 3)
  OWT=(--preset owt-paper train.batch_size=32 train.warmup_steps=200 train.eval_every=100000
       train.ckpt_every=100000 --max-steps 1000000)
  OWT_MIN=3; OWT_EVAL=(--max-sequences 64 --batch-size 16)
  SC=(--preset char-small --layers 8 --hidden 512 --heads 8 --num 64 --length 256 --steps 256 --prefix 64
      --repeats 3 --k 4 --reveal-k 4,16 --fills 4 --modes eager,graphs)
  VM=(--preset owt-paper --num 16 --length 1024 --steps 1024 --prefix 64 --repeats 3 --modes eager,graphs)
fi

# step NAME LIMIT_S COMMAND...: run it with a time limit that never passes the deadline, log it, record it.
step() {
  local name="$1" limit="$2"; shift 2
  local log="$LOGS/$name.log" t0 rc left capped=0
  t0=$(date +%s)
  left=$(( DEADLINE - t0 ))
  if [ "$left" -lt 10 ]; then
    echo "== $name: skipped (the check's ${BUDGET} s budget is spent)"
    echo "| $name | - | 0 | skipped: the ${BUDGET} s budget was spent |" >> "$SUMMARY"
    return 0
  fi
  [ "$limit" -gt "$left" ] && { limit="$left"; capped=1; }
  echo "== $name: $*" | tee "$log"
  timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  record "$name" "$rc" "$(( $(date +%s) - t0 ))" "$log" "$capped"
  echo "== $name: exit $rc in $(( $(date +%s) - t0 ))s"
  return 0
}

record() {  # NAME RC SECONDS LOG CAPPED  (steps run in parallel: each appends its lines with one write)
  local status="ok" block
  [ "$2" = 0 ] || status="**FAILED**"
  if [ "$2" = 124 ] || [ "$2" = 137 ]; then
    status="**TIMED OUT**"
    [ "$5" = 1 ] && status="**stopped at the ${BUDGET} s budget**"
  fi
  echo "| $1 | $2 | $3 | $status |" >> "$SUMMARY"
  block=$(echo; echo "<details><summary>$1 (exit $2, $3 s)</summary>"; echo; echo '```'
          grep -v '^\s*$' "$4" | grep -v 'it/s\]\|s/it\]' | tail -n 12 | cut -c1-220
          echo '```'; echo "</details>")
  printf '%s\n' "$block" >> "$DETAILS"
}

# together: wait for the background steps whose pids are in PIDS, then clear the list
PIDS=()
together() { for pid in "${PIDS[@]}"; do wait "$pid"; done; PIDS=(); }

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

# 1. corpus: the caller's prepared folder, else Python's own stdlib docstrings (no network needed)
if [ ! -f "$DATA/meta.json" ]; then
  DATA="$WORK/data"
  step corpus 60 "$PY" - "$WORK/stdlib_docstrings.txt" <<'EOF'
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
  step corpus-prepare 60 "${EDLM[@]}" data prepare --corpus files --path "$WORK/stdlib_docstrings.txt" --out "$DATA" \
    --no-progress
fi

# 2. phase A: the gpu tests in three processes (in the background until the end of the phase) ...
TESTS=()
if [ "$DEVICE" = cpu ]; then
  echo "| pytest -m gpu | - | 0 | skipped (DEVICE=cpu) |" >> "$SUMMARY"
else
  CLI_TESTS=(tests/test_gpu.py::test_cached_and_ancestral_samplers_agree_in_distribution
             tests/test_gpu.py::test_importance_sampler_with_an_energy tests/test_gpu.py::test_eval_with_energy_on_gpu
             tests/test_gpu.py::test_eval_gen_with_run_and_hf_judges tests/test_gpu.py::test_one_process_nccl_ddp_run)
  COMPILE_TESTS=(tests/test_gpu.py::test_compiled_training_saves_plain_keys_and_resumes)
  PYTEST=("$PY" -m pytest -q -p no:cacheprovider --durations=5)  # each with its own --basetemp: they run at once
  step pytest-gpu-cli 280 "${PYTEST[@]}" --basetemp "$WORK/pytest-cli" "${CLI_TESTS[@]}" & TESTS+=($!)
  step pytest-gpu-compile 280 "${PYTEST[@]}" --basetemp "$WORK/pytest-compile" "${COMPILE_TESTS[@]}" & TESTS+=($!)
  DESELECT=(); for id in "${CLI_TESTS[@]}" "${COMPILE_TESTS[@]}"; do DESELECT+=(--deselect "$id"); done
  step pytest-gpu-rest 280 "${PYTEST[@]}" --basetemp "$WORK/pytest-rest" -m gpu tests "${DESELECT[@]}" & TESTS+=($!)
fi
# ... the compile-cache warm-ups of phase B's throughput rows (nothing from them is reported) ...
step throughput-warmup 240 "${EDLM[@]}" bench throughput "${TP[@]}" --steps 1 --blocks 1 --device "$DEVICE" \
  --out "$WORK/warmup" & TESTS+=($!)
step throughput-warmup-small 240 "${EDLM[@]}" bench throughput "${TP_SMALL[@]}" --steps 1 --blocks 1 \
  --device "$DEVICE" --out "$WORK/warmup-small" & TESTS+=($!)

# ... owt-paper: 3 minutes of training on the GPT-2 corpus, then its validation bpc (in the background) ...
if [ -f "$DATA_OWT/meta.json" ]; then
  OWT_RUN="$WORK/runs/owt"
  ( step owt-train $(( 60 * ${OWT_MIN%.*} + 60 )) "${EDLM[@]}" train --data "$DATA_OWT" --model mdlm --out "$OWT_RUN" \
      --max-minutes "$OWT_MIN" --device "$DEVICE" --no-progress "${OWT[@]}"
    step owt-eval 60 "${EDLM[@]}" eval --run "$OWT_RUN" --data "$DATA_OWT" --split val --device "$DEVICE" \
      "${OWT_EVAL[@]}" ) & TESTS+=($!)
else
  echo "| owt-train | - | 0 | skipped: no prepared GPT-2 corpus at $DATA_OWT (see the script's header) |" >> "$SUMMARY"
fi
# ... and end to end: train MDLM and AR together, then everything that reads them
MDLM="$WORK/runs/mdlm"; AR="$WORK/runs/ar"
TRAIN=(--max-minutes "$TRAIN_MIN" --max-steps 100000 --device "$DEVICE" --no-progress "${MODEL[@]}")
step train-mdlm 150 "${EDLM[@]}" train --data "$DATA" --model mdlm --out "$MDLM" "${TRAIN[@]}" & PIDS+=($!)
step train-ar 150 "${EDLM[@]}" train --data "$DATA" --model ar --out "$AR" "${TRAIN[@]}" & PIDS+=($!)
together
step eval-mdlm 90 "${EDLM[@]}" eval --run "$MDLM" --data "$DATA" --device "$DEVICE" --max-sequences "$EVAL_SEQ" \
  --batch-size 128 & PIDS+=($!)
step eval-ar 90 "${EDLM[@]}" eval --run "$AR" --data "$DATA" --device "$DEVICE" --max-sequences "$EVAL_SEQ" \
  --batch-size 128 & PIDS+=($!)
step eval-edlm-bound 90 "${EDLM[@]}" eval --run "$MDLM" --data "$DATA" --energy "ar:$AR" --device "$DEVICE" \
  --max-sequences 8 --steps 32 --batch-size 8 & PIDS+=($!)
SAMPLE=(--num "$NUM" --batch-size "$NUM" --length "$LEN" --steps 256 --device "$DEVICE")
step sample-mdlm 90 "${EDLM[@]}" sample --run "$MDLM" "${SAMPLE[@]}" --out "$WORK/samples-mdlm.json" & PIDS+=($!)
step sample-edlm-ar 120 "${EDLM[@]}" sample --run "$MDLM" "${SAMPLE[@]}" --energy "ar:$AR" --k 4 --window 0.2 \
  --out "$WORK/samples-edlm-ar.json" & PIDS+=($!)
together
# the only AR model here is also the energy: the judge's numbers for EDLM-AR are flattered (noted in the report)
step eval-gen-mdlm 90 "${EDLM[@]}" eval-gen --samples "$WORK/samples-mdlm.json" --judge "run:$AR" \
  --device "$DEVICE" & PIDS+=($!)
step eval-gen-edlm-ar 90 "${EDLM[@]}" eval-gen --samples "$WORK/samples-edlm-ar.json" --judge "run:$AR" \
  --device "$DEVICE" & PIDS+=($!)
together
PIDS=("${TESTS[@]}"); together
PHASE_A=$(( $(date +%s) - STARTED ))

# 3. phase B: the measurements, one at a time, most important first
keep() {  # keep NAME SRC_DIR BASE: copy BASE.{md,json,png} of a benchmark's folder into the results as NAME.*
  for ext in md json png; do cp "$2/$3.$ext" "$RES/$1.$ext" 2>/dev/null; done
}
step bench-step-cost 150 "${EDLM[@]}" bench step-cost "${SC[@]}" --device "$DEVICE" --out "$WORK/sc"
keep step-cost "$WORK/sc" step_cost
step bench-vs-mdlm 120 "${EDLM[@]}" bench vs-mdlm "${VM[@]}" --device "$DEVICE" --out "$WORK/vm"
keep vs-mdlm "$WORK/vm" vs_mdlm
step bench-throughput-owt 90 "${EDLM[@]}" bench throughput "${TP_OWT[@]}" --device "$DEVICE" --out "$WORK/tp-owt"
keep throughput-owt-paper "$WORK/tp-owt" throughput
step bench-throughput 150 "${EDLM[@]}" bench throughput "${TP[@]}" --device "$DEVICE" --out "$WORK/tp"
keep throughput-text8-paper "$WORK/tp" throughput
step bench-throughput-small 100 "${EDLM[@]}" bench throughput "${TP_SMALL[@]}" --device "$DEVICE" --out "$WORK/tp-small"
keep throughput-char-small "$WORK/tp-small" throughput

# 4. the report
TOTAL=$(( $(date +%s) - STARTED ))
{
  echo "# edlm GPU check"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
       "$(git diff --quiet HEAD 2>/dev/null || echo '(with uncommitted changes)')," \
       "${TOTAL} s in all (phase A ${PHASE_A} s; budget ${BUDGET} s)."
  echo
  CUT=$(grep -E "skipped: the|stopped at the" "$SUMMARY" | cut -d'|' -f2 | sed 's/^ *//; s/ *$//' | paste -sd, - \
        | sed 's/,/, /g')
  echo "Cut by the deadline: ${CUT:-none}."
  echo
  sed 's/^/    /' "$WORK/env.txt"
  echo
  echo "| step | exit | seconds | status |"
  echo "|---|---|---|---|"
  cat "$SUMMARY"
  echo
  echo "Phase A (the gpu tests, the end-to-end chain and compile warm-ups) shares the GPU, so its training"
  echo "rates are lower than alone; phase B's benchmarks ran alone. Training: ${MODEL[*]}, --max-minutes"
  echo "$TRAIN_MIN. The judge of eval-gen is the AR model that is also the EDLM-AR energy, which flatters"
  echo "EDLM-AR's generative perplexity."
  echo
  for name in train-mdlm train-ar; do
    tail -n 1 "$LOGS/$name.log" 2>/dev/null | sed "s/^/- $name: /"
  done
  for name in owt-train; do
    tail -n 1 "$LOGS/$name.log" 2>/dev/null | sed "s/^/- $name (owt-paper, ${OWT_MIN} min, shared GPU): /"
  done
  for name in eval-mdlm eval-ar eval-edlm-bound eval-gen-mdlm eval-gen-edlm-ar owt-eval; do
    grep -m1 -i "bpc\|gen PPL" "$LOGS/$name.log" 2>/dev/null | cut -c1-200 | sed "s/^/- $name: /"
  done
  for name in pytest-gpu-cli pytest-gpu-compile pytest-gpu-rest; do
    grep -E "[0-9]+ (passed|failed|error)" "$LOGS/$name.log" 2>/dev/null | tail -n 1 | sed "s/^/- $name: /"
  done
  for file in step-cost.md vs-mdlm.md throughput-owt-paper.md throughput-text8-paper.md throughput-char-small.md; do
    [ -f "$RES/$file" ] && { echo; echo "## ${file%.md}"; echo; cat "$RES/$file"; }
  done
  echo
  echo "## Step logs (last lines)"
  cat "$DETAILS"
} > "$REPORT"
if [ -n "${OUT:-}" ]; then
  cp "$REPORT" "$OUT/gpu_report.md"
  tar -czf "$OUT/gpu_results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")" 2>/dev/null
  tar -czf "$OUT/gpu_logs.tar.gz" -C "$WORK" logs 2>/dev/null
fi
echo "wrote $REPORT (${TOTAL} s)"
