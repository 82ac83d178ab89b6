#!/usr/bin/env bash
# Start a real single-node SLURM 22.05 test cluster (munge, MariaDB, slurmdbd,
# slurmctld, slurmd) on a Debian 12 machine, as root, without systemd.
#
# Idempotent: run it again at any time and it brings back whatever is down
# (the integration tests stop slurmctld with `slurm-testcluster-stop.sh
# slurmctld` and run this script to start it again) and leaves the rest alone.
# `scripts/slurm-testcluster-stop.sh` stops the daemons by their pid files.
#
# Knobs (environment):
#   SLURM_CLUSTER       cluster name (default `testcluster`)
#   SLURM_CPUS          CPUs the node advertises (default: what `slurmd -C`
#                       detects; may exceed the real count thanks to
#                       `SlurmdParameters=config_overrides`)
#   SLURM_MEM_MB        RealMemory the node advertises (default: detected)
#   SLURM_MIN_JOB_AGE   seconds a finished job stays in squeue (default 300)
#   SLURM_CGROUP        1 = proctrack/cgroup + task/cgroup (cgroup v1; gives a
#                       real OUT_OF_MEMORY but creates top-level cgroup
#                       folders); default 0 = proctrack/linuxproc, task/none
#   SLURM_OVERMEM_KILL  1 = `JobAcctGatherParams=OverMemoryKill` (without
#                       cgroups, kill jobs over --mem: FAILED, ExitCode 0:9)
#   SLURM_DB_PASS       password of the MariaDB user `slurm` (default `slurmpw`)
#   SLURM_QUICKACK      1 = set `quickack 1` on the 127.0.0.1 loopback route.
#                       Every slurmdbd RPC otherwise stalls twice on a 40 ms
#                       delayed ACK (sacct ~95 ms -> ~10 ms). It changes the
#                       machine's routing table, so it is off unless asked for.
#
# MariaDB: a server already answering on the local socket or on
# 127.0.0.1:3306 (as root without a password, or with `MYSQL_PWD` set) is
# used as it is; otherwise the script installs and starts one.
#
# Partition `debug` holds the one node. Logs: /var/log/slurm.
set -euo pipefail

CLUSTER=${SLURM_CLUSTER:-testcluster}
DB_PASS=${SLURM_DB_PASS:-slurmpw}
CGROUP=${SLURM_CGROUP:-0}
OVERMEM=${SLURM_OVERMEM_KILL:-0}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-300}
QUICKACK=${SLURM_QUICKACK:-0}
STATE_DIR=/run/hpc-slurm-testcluster

log() { echo "slurm-testcluster: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the cluster's daemons run as root and install packages"
case $DB_PASS in *[!A-Za-z0-9_.-]*) die "\`SLURM_DB_PASS\` may hold only letters, digits, \`_\`, \`.\`, \`-\`" ;; esac

# One run at a time. fd 9 holds the lock, so every daemon below is started
# with `9>&-`: a daemon that inherited it would hold the lock forever.
mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/lock"
flock 9

# alive PIDFILE NAME: the pid file names a live process called NAME. Checking
# the name guards against a stale pid file whose pid was reused.
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds or time runs out.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local end=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then
      log "gave up after ${limit} s waiting for $what; the daemons' logs end with:"
      tail -n 5 /var/log/slurm/*.log /var/log/slurm/mariadb.err 2>/dev/null >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# ---- MariaDB: which server, if any, is already there ------------------------
# `localhost` makes the client (and slurmdbd) use the socket; `127.0.0.1`, TCP.
db_socket_up() { [ -S /run/mysqld/mysqld.sock ] && mariadb-admin --connect-timeout=2 ping; }
db_tcp_up() { mariadb-admin --connect-timeout=2 -h 127.0.0.1 -P 3306 -u root ping; }
db_port_open() { timeout 2 bash -c '</dev/tcp/127.0.0.1/3306' 2>/dev/null; }

# ---- 1. packages ----------------------------------------------------------------
pkgs="munge slurmctld slurmd slurm-client slurmdbd mariadb-client"
# Only install a server when none answers: the machine may already run one.
if ! { [ -S /run/mysqld/mysqld.sock ] || db_port_open; }; then
  pkgs="$pkgs mariadb-server"
fi
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # Without systemd, keep the packages' postinst scripts from starting daemons:
  # this script starts them itself, with its own configuration.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  apt-get install -y -q --no-install-recommends $missing >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# ---- 2. host name and resources ------------------------------------------------
NODE=$(hostname -s)
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
detected=$(slurmd -C | head -1)
CPUS=${SLURM_CPUS:-$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$detected")}
MEM=${SLURM_MEM_MB:-$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$detected")}

if [ "$QUICKACK" = 1 ] && ! ip route show table local | grep -q '^local 127.0.0.1 .*quickack 1'; then
  log "setting quickack on the 127.0.0.1 loopback route"
  ip route change local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 quickack 1
fi

# ---- 3. configuration ----------------------------------------------------------
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
if [ "$CGROUP" = 1 ]; then
  proctrack=proctrack/cgroup
  task=task/cgroup,task/affinity
  cat >/etc/slurm/cgroup.conf <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no
EOF
else
  proctrack=proctrack/linuxproc
  task=task/none
  rm -f /etc/slurm/cgroup.conf
fi
gather_params=""
if [ "$OVERMEM" = 1 ]; then gather_params="JobAcctGatherParams=OverMemoryKill"; fi

# Why these lines:
#   batch_sched_delay=0      the default holds each batch job up to 3 s
#   EnforcePartLimits=ALL    else an impossible request pends forever instead
#                            of being refused by sbatch
#   JobAcctGatherFrequency   sample every second, so short jobs get a MaxRSS
#   MinJobAge                how long finished jobs stay visible to squeue
#   AccountingStoreFlags     job_comment: sacct shows comments, where a keyed
#                            job carries its idempotency key (find-job)
cat >/etc/slurm/slurm.conf.new <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=$proctrack
TaskPlugin=$task
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
EnforcePartLimits=ALL
MinJobAge=$MIN_JOB_AGE
InactiveLimit=0
KillWait=5
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
$gather_params
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf || conf_changed=1
mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf

# ---- 4. munge ------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
if ! alive /run/munge/munged.pid munged; then
  log "starting munged"
  start-stop-daemon --start --oknodo --chuid munge --exec /usr/sbin/munged 9>&-
fi
wait_for 10 munge bash -c 'munge -n | unmunge'

# ---- 5. MariaDB ----------------------------------------------------------------
if db_socket_up >/dev/null 2>&1; then
  db_host=localhost
elif db_tcp_up >/dev/null 2>&1; then
  db_host=127.0.0.1
else
  log "starting mariadbd"
  mkdir -p /run/mysqld
  chown mysql:root /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
    --user=mysql --pid-file=/run/mysqld/mysqld.pid \
    --log-error=/var/log/slurm/mariadb.err 9>&-
  # Stop it again in slurm-testcluster-stop.sh: it is ours, not the machine's.
  touch "$STATE_DIR/started-mariadbd"
  wait_for 60 mariadb db_socket_up
  db_host=localhost
fi
db() {
  if [ "$db_host" = localhost ]; then mariadb "$@"; else mariadb -h 127.0.0.1 -P 3306 -u root "$@"; fi
}
# `localhost` for socket clients; `%` for TCP ones (a server in a container
# sees the bridge address rather than 127.0.0.1).
db -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
       ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
       CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY '$DB_PASS';
       ALTER USER 'slurm'@'%' IDENTIFIED BY '$DB_PASS';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%';
       FLUSH PRIVILEGES;"

cat >/etc/slurm/slurmdbd.conf.new <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=$db_host
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
# slurmdbd refuses a configuration file that others can read (it holds the
# password).
chown root:root /etc/slurm/slurmdbd.conf.new
chmod 600 /etc/slurm/slurmdbd.conf.new
dbd_conf_changed=0
cmp -s /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf || dbd_conf_changed=1
mv /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf

# ---- 6. slurmdbd ---------------------------------------------------------------
if alive /run/slurmdbd.pid slurmdbd && [ "$dbd_conf_changed" = 1 ]; then
  log "slurmdbd.conf changed: restarting slurmdbd"
  kill "$(cat /run/slurmdbd.pid)"
  wait_for 15 "slurmdbd to stop" bash -c '! kill -0 "$(cat /run/slurmdbd.pid)"'
fi
if ! alive /run/slurmdbd.pid slurmdbd; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd 9>&-
fi
wait_for 60 slurmdbd sacctmgr -n list cluster

# ---- 7. slurmctld and slurmd ---------------------------------------------------
started_ctld=0
if ! alive /run/slurmctld.pid slurmctld; then
  # slurmctld refuses to start ("CLUSTER NAME MISMATCH") on state saved for
  # another ClusterName. This is a throw-away test cluster: wipe that state.
  name_file=/var/lib/slurm/slurmctld/clustername
  if [ -s "$name_file" ] && [ "$(cat "$name_file")" != "$CLUSTER" ]; then
    log "state in /var/lib/slurm/slurmctld is for cluster \`$(cat "$name_file")\`: wiping it"
    find /var/lib/slurm/slurmctld -mindepth 1 -delete
  fi
  log "starting slurmctld"
  /usr/sbin/slurmctld 9>&-
  started_ctld=1
elif [ "$conf_changed" = 1 ]; then
  log "slurm.conf changed: scontrol reconfigure"
  scontrol reconfigure || true
fi
wait_for 30 slurmctld scontrol ping
if ! alive /run/slurmd.pid slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd 9>&-
elif [ "$started_ctld" = 1 ]; then
  # A fresh slurmctld shows the node as `unk` until its next ping (~5 s);
  # SIGHUP makes slurmd reconfigure and register at once (~1 s).
  kill -HUP "$(cat /run/slurmd.pid)"
fi

node_ready() { sinfo -h -n "$NODE" -o %t | grep -qE '^(idle|mix|alloc)$'; }
if ! wait_for 30 "node $NODE to be idle" node_ready; then
  # A node left down or drained by an earlier run: put it back in service.
  scontrol update NodeName="$NODE" State=RESUME || true
  wait_for 30 "node $NODE to be idle" node_ready
fi
cluster_registered() { sacctmgr -n -P list cluster format=cluster,controlhost | grep -q "^$CLUSTER|[0-9]"; }
wait_for 60 "cluster $CLUSTER to register with slurmdbd" cluster_registered
log "up: $(sinfo -h -o '%P %a %D %t %N %c CPUs %m MB')"
