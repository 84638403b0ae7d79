#!/usr/bin/env bash
# Fine-tune on every local GPU, else on the CPU (SPAMJOB_CPU_PROCESSES ranks); see jobs/launch.sh.
#   jobs/finetune.sh --data data --out runs/r1 [any `spamjob train` option]
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/launch.sh" "$here/finetune.py" "$@"
