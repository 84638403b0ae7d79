#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one prepared run (a GPU machine is lent only
# now and then, for minutes): fine-tuning (reference preset vs default, gpt2-small dims,
# bf16 on the GPU) and scoring (reference loop vs transformers vs spamjob end to end).
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repo root
#   SMOKE=1 bash benchmarks/gpu_check.sh         # tiny sizes: checks this script on a CPU
#
# Runs without installing spamjob (PYTHONPATH=repo root) with the dataset and tokenizer
# files under $SHARED (default ../shared; any copy with the same layout). Everything it
# prints also goes to $OUT (default ./gpu-check): env.txt, finetune.txt/.json,
# score.txt/.json, host.txt, ray.txt. Each step has its own time limit, so one slow step cannot
# eat the others'.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SHARED=${SHARED:-../shared}
OUT=${OUT:-gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TIKTOKEN_CACHE_DIR="$SHARED/tiktoken-cache" SPAMJOB_TOKENIZER="$SHARED/gpt2-tokenizer"
for f in "$SHARED/data/SMSSpamCollection" "$SPAMJOB_TOKENIZER/encoder.json"; do
  [ -f "$f" ] || { echo "gpu_check: $f not found (set SHARED to a copy of ../shared)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, output to the screen and $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}

# What every step needs, checked before any step runs (matplotlib is optional: plots only).
if ! "$PY" -c 'import torch, accelerate, transformers, tiktoken, pyarrow, pandas, click, safetensors, tqdm' 2>"$OUT/env.err"; then
  echo "gpu_check: $PY lacks a package every step needs: $(tail -n 1 "$OUT/env.err")" >&2
  exit 1
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'
  "$PY" -c 'import accelerate, transformers, tiktoken
print("accelerate", accelerate.__version__, "transformers", transformers.__version__, "tiktoken", tiktoken.__version__)'
  "$PY" -c 'import matplotlib; print("matplotlib", matplotlib.__version__)' 2>/dev/null || echo "no matplotlib: runs without plots"
} 2>&1 | tee "$OUT/env.txt"

step prepare 120 "$PY" -m spamjob.cli prepare --source "$SHARED/data/SMSSpamCollection" --out "$work/data"
# The launcher on this machine (all local GPUs, else CPU ranks): one short epoch, then what it recorded.
# shellcheck disable=SC2329  # run through `bash -c launcher` (timeout needs a command)
launcher() {
  PATH="$(dirname "$(command -v "$PY")"):$PATH" bash jobs/finetune.sh --data "$work/data" --weights random \
    --n-layers 2 --emb-dim 64 --n-heads 2 --epochs 1 --out "$work/launch" || return
  "$PY" -c 'import json, sys; m = json.load(open(sys.argv[1]))
print({k: m[k] for k in ("device", "mixed_precision", "num_processes", "wall_time_s")})' "$work/launch/metrics.json"
}
export -f launcher
export PY work
step launcher 180 bash -c launcher
if [ -n "${SMOKE:-}" ]; then
  step finetune 300 "$PY" benchmarks/finetune_bench.py --data "$work/data" --smoke --json "$OUT/finetune.json"
  step score 300 "$PY" benchmarks/score_bench.py --smoke --sms "$SHARED/data/SMSSpamCollection" --json "$OUT/score.json"
  step host 120 "$PY" benchmarks/score_bench.py --host-only --n 5000 --host-workers 1 --sms "$SHARED/data/SMSSpamCollection"
else
  # gpt2-small dims, 5 epochs each: the reference preset (~15 s of training on an H200 with
  # the book's code) and the default; bf16 is the GPU default.
  step finetune 240 "$PY" benchmarks/finetune_bench.py --data "$work/data" --runs reference,default --json "$OUT/finetune.json"
  # 20,000 messages for the slow reference loop (a), 400,000 for transformers (b), 2,000,000 for
  # spamjob (c) with and without --compile: whole-job and steady-state rates, bf16 vs fp32
  # agreement, GPU memory peak.
  step score 420 "$PY" benchmarks/score_bench.py --n 400000 --n-spamjob 2000000 --n-reference 20000 \
    --variants fp32,compile --sms "$SHARED/data/SMSSpamCollection" --spamjob-args "--window-rows 65536" \
    --json "$OUT/score.json"
  # The host's microseconds per message per stage (budget for 100,000 msg/s: 10 us).
  step host 120 "$PY" benchmarks/score_bench.py --host-only --n 200000 --host-workers 8 \
    --sms "$SHARED/data/SMSSpamCollection"
fi
if "$PY" -c 'import ray' 2>/dev/null; then  # the Ray path on the GPU (one GPU per actor), when installed
  step ray 240 "$PY" benchmarks/engines_bench.py --engines spamjob,ray --n "$([ -n "${SMOKE:-}" ] && echo 2000 || echo 400000)" \
    --sms "$SHARED/data/SMSSpamCollection"
else
  echo "== ray: not installed here, skipped" | tee "$OUT/ray.txt"
fi
echo "gpu_check: $([ $status -eq 0 ] && echo "all steps passed" || echo "a step FAILED"); logs in $OUT"
exit $status
