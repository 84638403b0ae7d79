#!/usr/bin/env bash
# A one-node Slurm cluster from Debian's packages (slurmctld, slurmd, munge), for the tests:
#   tests/slurm/cluster.sh start DIR   # config, state, logs and munge's socket all in DIR
#   tests/slurm/cluster.sh stop DIR
# Then SLURM_CONF=DIR/slurm.conf makes sbatch, squeue and sacct talk to it. Run as root (the
# daemons run as root here, as SlurmUser). The node is this host with CPUs=2 (nproc may be
# more; the tests size their jobs for 2).
set -euo pipefail
action="${1:?usage: cluster.sh start|stop DIR}"
dir="$(mkdir -p "${2:?usage: cluster.sh start|stop DIR}" && cd "$2" && pwd)"
host="$(hostname -s)"

stop() {
  for pid_file in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    if [ -s "$pid_file" ]; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
    fi
  done
  for _ in $(seq 50); do  # up to 5 s for each to exit
    alive=0
    for pid_file in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
      if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid_file in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [ -s "$pid_file" ] && kill -9 "$(cat "$pid_file")" 2>/dev/null || true
  done
}

start() {
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    head -c 1024 /dev/urandom > "$dir/munge/munge.key"
    chmod 600 "$dir/munge/munge.key"
  fi
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=spamjob-tests
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host CPUs=2 State=UNKNOWN
PartitionName=tests Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -f "$dir/slurm.conf" -i
  slurmd -f "$dir/slurm.conf"
  for _ in $(seq 100); do  # up to 10 s for the node to come up idle
    if SLURM_CONF="$dir/slurm.conf" sinfo -h -N -o '%T' 2>/dev/null | grep -q '^idle'; then return 0; fi
    sleep 0.1
  done
  echo "cluster.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  stop
  return 1
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
