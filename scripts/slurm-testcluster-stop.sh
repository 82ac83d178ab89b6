#!/usr/bin/env bash
# Stop the daemons that scripts/slurm-testcluster.sh started, by the pids in
# their pid files.
#
#   scripts/slurm-testcluster-stop.sh              stop the whole cluster
#   scripts/slurm-testcluster-stop.sh slurmctld    stop only the named daemons
#                                                  (slurmd slurmctld slurmdbd munged mariadbd)
#
# Without arguments MariaDB is stopped only if slurm-testcluster.sh started it:
# a server that was already running belongs to the machine, not to us.
# Run scripts/slurm-testcluster.sh again to bring back whatever is down.
set -euo pipefail

STATE_DIR=/run/hpc-slurm-testcluster

pidfile_of() {
  case $1 in
    slurmd) echo /run/slurmd.pid ;;
    slurmctld) echo /run/slurmctld.pid ;;
    slurmdbd) echo /run/slurmdbd.pid ;;
    munged) echo /run/munge/munged.pid ;;
    mariadbd) echo /run/mysqld/mysqld.pid ;;
    *)
      echo "error: unknown daemon \`$1\`" >&2
      echo "hint: one of \`slurmd\`, \`slurmctld\`, \`slurmdbd\`, \`munged\`, \`mariadbd\`" >&2
      exit 2
      ;;
  esac
}

# stop NAME: SIGTERM the pid in NAME's pid file, if that is a live NAME
# process (a stale file's pid may belong to someone else), and wait for it.
stop() {
  local name=$1 pidfile pid
  pidfile=$(pidfile_of "$name")
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
  echo "slurm-testcluster: stopping $name ($pid)" >&2
  kill "$pid"
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "error: $name ($pid) did not stop within 15 s" >&2
  return 1
}

if [ $# -gt 0 ]; then
  for name in "$@"; do pidfile_of "$name" >/dev/null; done
  for name in "$@"; do stop "$name"; done
  exit 0
fi

stop slurmd
stop slurmctld
stop slurmdbd
stop munged
if [ -e "$STATE_DIR/started-mariadbd" ]; then
  stop mariadbd
  rm -f "$STATE_DIR/started-mariadbd"
fi
