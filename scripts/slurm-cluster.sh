#!/usr/bin/env bash
# Install (if missing) and start a one-node Slurm cluster on this machine, or stop it: the
# real sbatch, squeue, sacct and scancel that `harness submit slurm` tests run against.
#
#   scripts/slurm-cluster.sh start   # prints: export SLURM_CONF=/.../slurm.conf
#   eval "$(scripts/slurm-cluster.sh start)"
#   scripts/slurm-cluster.sh stop
#   scripts/slurm-cluster.sh status
#
# Debian's slurmctld, slurmd, slurm-client and munge, each daemon with its own pid file, state,
# spool and log under HARNESS_SLURM_ROOT (default /var/lib/harness-slurm), and a configuration
# written there (SLURM_CONF points at it; /etc/slurm is not touched). One node, this machine,
# with its CPUs (2 here) as consumable resources (select/cons_tres); task/affinity binds each
# job to the CPUs it was given, so two 1-CPU array tasks never share a core. No accounting
# database: sacct answers nothing, squeue and scontrol do. Runs as root (SlurmUser=root).
set -euo pipefail

ROOT="${HARNESS_SLURM_ROOT:-/var/lib/harness-slurm}"
CONF="$ROOT/slurm.conf"
MUNGE_SOCKET="$ROOT/munge/munge.socket.2"
WAIT_S="${HARNESS_SLURM_WAIT_S:-60}"

log() { echo "slurm-cluster: $*" >&2; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_slurm() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  log "installing Debian's slurmctld, slurmd, slurm-client and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
}

write_config() {
  local host cpus
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  mkdir -p "$ROOT"/{state,spool,run,log,munge}
  chmod 700 "$ROOT/munge"
  if [[ ! -f "$ROOT/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=128 count=1 status=none
    chmod 400 "$ROOT/munge/munge.key"
  fi
  # cgroup.conf is read by some plugins even when none uses cgroups; an empty one is enough.
  : >"$ROOT/cgroup.conf"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-cluster.sh: a one-node test cluster for the harness's Slurm tests.
ClusterName=harness
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

ready() {
  SLURM_CONF="$CONF" timeout 10 sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

start() {
  install_slurm
  write_config
  if ! pid_alive "$ROOT/run/munged.pid"; then
    rm -f "$MUNGE_SOCKET" "$ROOT/run/munged.pid"
    munged --socket="$MUNGE_SOCKET" --key-file="$ROOT/munge/munge.key" \
      --pid-file="$ROOT/run/munged.pid" --log-file="$ROOT/log/munged.log" \
      --seed-file="$ROOT/munge/munged.seed" --force >&2
  fi
  if ! pid_alive "$ROOT/run/slurmctld.pid"; then
    SLURM_CONF="$CONF" slurmctld -i >&2
  fi
  if ! pid_alive "$ROOT/run/slurmd.pid"; then
    SLURM_CONF="$CONF" slurmd >&2
  fi
  for ((i = 0; i < WAIT_S * 2; i++)); do
    if ready; then break; fi
    sleep 0.5
  done
  if ! ready; then
    log "the node did not come up within ${WAIT_S}s; last log lines:"
    tail -n 15 "$ROOT/log/slurmctld.log" "$ROOT/log/slurmd.log" >&2 || true
    exit 1
  fi
  log "ready: $(SLURM_CONF="$CONF" sinfo -h -o '%P %D node(s) %c CPUs %t')"
  echo "export SLURM_CONF=$CONF"
}

stop_one() {
  local name="$1" pidfile="$ROOT/run/$1.pid" pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return
  fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -f "$pidfile"
}

stop() {
  if [[ -f "$CONF" ]] && pid_alive "$ROOT/run/slurmctld.pid"; then
    # jobs left by a test: cancelled, so that no training outlives the cluster
    SLURM_CONF="$CONF" timeout 10 scancel --full --user=root 2>/dev/null || true
  fi
  stop_one slurmd
  stop_one slurmctld
  stop_one munged
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if ready; then
      echo "running: SLURM_CONF=$CONF"
      SLURM_CONF="$CONF" sinfo
    else
      echo "not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
