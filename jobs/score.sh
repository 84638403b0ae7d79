#!/usr/bin/env bash
# Score files on every local GPU, else on the CPU (SPAMJOB_CPU_PROCESSES ranks); see jobs/launch.sh.
#   jobs/score.sh INPUT... --model runs/r1 --out scored/ [any `spamjob score` option]
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/launch.sh" "$here/score.py" "$@"
