#!/usr/bin/env bash
# Launch a spamjob job script with accelerate on every local GPU, else on the CPU.
#
#   jobs/launch.sh jobs/finetune.py --data data --out runs/r1 [any `spamjob train` option]
#   jobs/launch.sh jobs/score.py INPUT... --model runs/r1 --out scored/ [any `spamjob score` option]
# (jobs/finetune.sh and jobs/score.sh are these two lines.)
#
# GPUs: one process per GPU (all of them), bf16 by default.
# CPU:  SPAMJOB_CPU_PROCESSES ranks (default 1). Several CPU ranks need
#       `--multi_gpu` with ACCELERATE_USE_CPU=1 (plain `--cpu --num_processes N` starts
#       only one process with accelerate 1.x); this script does that.
# Several machines: run it on each with NUM_MACHINES, MACHINE_RANK, MAIN_PROCESS_IP and
#       MAIN_PROCESS_PORT set (Slurm: see jobs/README.md); processes per machine as above.
# ACCELERATE_CONFIG overrides the config file; SPAMJOB_DRY_RUN=1 prints the command only;
# PYTHON names the interpreter that counts the GPUs (default python3); SPAMJOB_GPUS skips the count.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${ACCELERATE_CONFIG:-$here/../accelerate_config.yaml}"
machines="${NUM_MACHINES:-1}"

# The Python that has torch and spamjob ($PYTHON, else python3); counting GPUs must not fail
# silently, or a GPU machine would run on its CPU.
py="${PYTHON:-python3}"
if [ -z "${SPAMJOB_GPUS:-}" ]; then
  command -v "$py" >/dev/null || { echo "launch.sh: $py not found; set PYTHON to the interpreter with torch" >&2; exit 1; }
  gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())') ||
    { echo "launch.sh: $py cannot import torch; set PYTHON, or SPAMJOB_GPUS to the GPU count" >&2; exit 1; }
else
  gpus="$SPAMJOB_GPUS"
fi
cmd=(accelerate launch --config_file "$config" --num_machines "$machines" --machine_rank "${MACHINE_RANK:-0}")
if [ -n "${MAIN_PROCESS_IP:-}" ]; then
  cmd+=(--main_process_ip "$MAIN_PROCESS_IP" --main_process_port "${MAIN_PROCESS_PORT:-29500}")
fi
if [ "$gpus" -gt 0 ]; then
  per_machine="$gpus"
else
  per_machine="${SPAMJOB_CPU_PROCESSES:-1}"
  export ACCELERATE_USE_CPU=1
fi
total=$(( per_machine * machines ))
if [ "$total" -gt 1 ]; then
  cmd+=(--multi_gpu --num_processes "$total")
elif [ "$gpus" -gt 0 ]; then
  cmd+=(--num_processes 1)
else
  cmd+=(--cpu --num_processes 1)
fi
script="$1"
shift
cmd+=("$script" "$@")

echo "+ ${cmd[*]}" >&2
if [ "${SPAMJOB_DRY_RUN:-0}" = "1" ]; then
  exit 0
fi
exec "${cmd[@]}"
