# shellcheck shell=bash
# Sourced by the sbatch templates: where the repository is, and accelerate's multi-node
# settings from Slurm's variables (one task per node; accelerate starts one process per GPU).

# sbatch runs a copy of the script from its spool folder: find the repository by the
# submit folder (submit from the repository root) unless SPAMJOB_REPO says otherwise.
if [ -z "${SPAMJOB_REPO:-}" ]; then
  if [ -f "${SLURM_SUBMIT_DIR:-.}/jobs/launch.sh" ]; then
    SPAMJOB_REPO="$(cd "${SLURM_SUBMIT_DIR:-.}" && pwd)"
  else
    SPAMJOB_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  fi
fi
export SPAMJOB_REPO

# First host of SLURM_JOB_NODELIST ("gpu[01-04,07],cpu3" -> "gpu01"): scontrol's answer, else
# (no scontrol, or one that cannot reach its cluster's configuration) the same parsed here.
first_host() {
  local host=""
  if command -v scontrol >/dev/null 2>&1; then
    host="$(scontrol show hostnames "$1" 2>/dev/null | head -n 1)" || host=""
  fi
  if [ -z "$host" ]; then
    host="$(python3 - "$1" <<'PY'
import re, sys
first = re.match(r"[^,\[]+(\[[^\]]*\])?", sys.argv[1]).group(0)
m = re.match(r"([^\[]*)\[([^\],-]+)", first)
print(m.group(1) + m.group(2) if m else first)
PY
)"
  fi
  echo "$host"
}

export NUM_MACHINES="${SLURM_NNODES:-1}"
export MACHINE_RANK="${SLURM_NODEID:-${SLURM_PROCID:-0}}"
if [ "$NUM_MACHINES" -gt 1 ]; then
  MAIN_PROCESS_IP="$(first_host "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is not set}")"
  export MAIN_PROCESS_IP
  export MAIN_PROCESS_PORT="${MAIN_PROCESS_PORT:-29500}"
fi
