#!/usr/bin/env bash
# A single-node SLURM cluster on loopback, for the pipeline's tests and CI (Debian's slurm-wlm and munge; root).
#
#   bash tools/slurm_cluster.sh up     # install what is missing, configure, start, wait until the node is idle
#   bash tools/slurm_cluster.sh down   # stop the daemons that `up` started (and nothing else)
#   bash tools/slurm_cluster.sh status # "up" (exit 0) when a controller answers, else "down" (exit 1)
#   bash tools/slurm_cluster.sh ctld-stop / ctld-start   # stop slurmctld alone / start it again on its saved state
#                                      # (a controller that blinks: the jobs and the queue survive, as on a cluster)
#
# WITH_DBD=1 also starts MariaDB + slurmdbd, so that `sacct` works (submitit reads job states from sacct: without
# it a job's state stays UNKNOWN, and a job killed before it wrote its result is never seen to end).
# No cgroups, no GRES (a --gres=gpu request is rejected: test profiles request no GPU). The configuration goes to
# /etc/slurm (the default path, so sbatch, submitit and Snakemake find it), state and logs under $SLURM_DIR.
# `up` on a machine whose controller already answers does nothing, and `down` then stops nothing: a PID file in
# $SLURM_DIR is written only for a daemon this script started.
set -euo pipefail
SLURM_DIR=${SLURM_DIR:-/tmp/icp-slurm}
WITH_DBD=${WITH_DBD:-0}
export DEBIAN_FRONTEND=noninteractive

wait_for() {  # wait_for SECONDS CMD...: poll every 0.1 s
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "slurm_cluster: timed out waiting for: $*" >&2; return 1
}

install() {
  local pkgs="slurmctld slurmd slurm-client munge" p missing=()
  [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server mariadb-client"
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "slurm_cluster: needs root to install ${missing[*]}" >&2; exit 1; }
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_conf() {
  local cpus mem acct
  cpus=$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc)  # the machine's CPUs: nproc reads OMP_NUM_THREADS (the tests set 1)
  mem=$(( $(slurmd -C | grep -o 'RealMemory=[0-9]*' | cut -d= -f2) - 1024 ))
  acct="AccountingStorageType=accounting_storage/none"
  [ "$WITH_DBD" = 1 ] && acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  mkdir -p /etc/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=icp
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0   # someone else's munged answers: use it
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  wait_for 10 bash -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$SLURM_DIR/run/munged.pid"
}

start_dbd() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mysqladmin ping >/dev/null 2>&1; then
    # its pid file in its own run folder: mariadbd runs as mysql and cannot write into root's $SLURM_DIR
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid >"$SLURM_DIR/log/mariadb.log" 2>&1 </dev/null &
    echo $! >"$SLURM_DIR/run/mariadb.pid"  # for `down`, written before the wait so a failed start is stopped too
    wait_for 60 mysqladmin ping || { tail -n 3 "$SLURM_DIR/log/mariadb.log" >&2; return 1; }
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=$SLURM_DIR/run/slurmdbd.pid
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  /usr/sbin/slurmdbd
  wait_for 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
}

up() {
  if scontrol ping 2>/dev/null | grep -q UP; then
    echo "slurm_cluster: a controller already answers; nothing started"; return 0
  fi
  install
  rm -rf "$SLURM_DIR"; mkdir -p "$SLURM_DIR"/{state,spool,log,run}
  # a failed start stops the daemons it had started (by their PID files) instead of leaving them running
  trap 'echo "slurm_cluster: up failed; stopping what it started" >&2; down >&2' ERR
  write_conf
  start_munge
  [ "$WITH_DBD" = 1 ] && start_dbd
  /usr/sbin/slurmctld -i
  wait_for 30 scontrol ping
  /usr/sbin/slurmd -N localhost
  wait_for 30 bash -c 'sinfo -h -o %T | grep -qx idle'
  if [ "$WITH_DBD" = 1 ]; then  # the cluster is registered in slurmdbd: sacct answers
    wait_for 60 bash -c 'sacctmgr -n list cluster format=cluster | grep -qw icp'
  fi
  trap - ERR
  echo "slurm_cluster: up: $(sinfo -h -o '%P %D %T %N')"
}

down() {  # TERM what `up` started (by its PID files), then wait until each has gone
  local f p pids=()
  for f in slurmd slurmctld slurmdbd mariadb munged; do
    [ -s "$SLURM_DIR/run/$f.pid" ] || continue
    p=$(cat "$SLURM_DIR/run/$f.pid"); rm -f "$SLURM_DIR/run/$f.pid"
    kill "$p" 2>/dev/null && pids+=("$p")
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  echo "slurm_cluster: down (${#pids[@]} daemons stopped)"
}

ctld_stop() {  # the controller of the cluster that `up` started, and nothing else
  local p
  [ -s "$SLURM_DIR/run/slurmctld.pid" ] || { echo "slurm_cluster: no slurmctld started here" >&2; return 1; }
  p=$(cat "$SLURM_DIR/run/slurmctld.pid")
  kill "$p"
  for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  echo "slurm_cluster: slurmctld stopped"
}

ctld_start() {  # without -i: it reads back the jobs and queue it saved
  /usr/sbin/slurmctld
  wait_for 30 scontrol ping
  echo "slurm_cluster: slurmctld started"
}

status() {
  if scontrol ping 2>/dev/null | grep -q UP; then echo up; else echo down; return 1; fi
}

case "${1:-up}" in
  up|down|status) "$1" ;;
  ctld-stop) ctld_stop ;;
  ctld-start) ctld_start ;;
  *) echo "usage: $0 up|down|status|ctld-stop|ctld-start" >&2; exit 2 ;;
esac
