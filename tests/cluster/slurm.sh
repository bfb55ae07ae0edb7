#!/usr/bin/env bash
# A real single-node Slurm cluster with accounting, from Debian's packages, for the cluster tests.
#
#   tests/cluster/slurm.sh check   can this machine run one? (root and apt-get; exit 3 if not)
#   tests/cluster/slurm.sh up      install what is missing, start munge, MariaDB, slurmdbd,
#                                  slurmctld and slurmd, wait until a job runs (idempotent)
#   tests/cluster/slurm.sh down    stop every daemon that `up` started, by the PIDs they wrote,
#                                  and remove the configuration it wrote
#
# The configuration is /etc/slurm/slurm.conf, slurmdbd.conf and cgroup.conf (the executor
# plugin's job step drops SLURM_CONF, so Slurm's default place it is); `up` refuses to replace
# files it did not write. Processes are tracked as production clusters do, with cgroups
# (proctrack/cgroup: a job step's processes end with the step), where this machine lets root
# create cgroups; elsewhere, or with MABENCH_SLURM_PROCTRACK=linuxproc, by their parent PIDs. State, spool, logs and PID files live under $MABENCH_SLURM_DIR (default
# /var/tmp/mabench-slurm). munge and MariaDB are the system's: `up` starts them only when they
# do not answer, and `down` stops only those it started. Without accounting (slurmdbd) the
# Snakemake slurm executor never sees a job finish (it asks sacct), so accounting is part of it.
set -euo pipefail

DIR=${MABENCH_SLURM_DIR:-/var/tmp/mabench-slurm}
CLUSTER=mabench
ACCOUNT=mabench
PARTITION=mabench
DB=slurm_acct_db
DB_USER=mabench_slurm
CONF_DIR=/etc/slurm
MARK="# Written by tests/cluster/slurm.sh"
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

say() { echo "slurm.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# Wait up to $1 seconds for the command "${@:2}" to succeed.
wait_for() {
    local limit=$1; shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

check() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "needs root (it installs Debian packages and starts Slurm's daemons)"; return 3
    fi
    if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
        echo "needs apt-get and dpkg (Debian's packages)"; return 3
    fi
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [[ -s /etc/munge/munge.key ]] || mungekey -c -k /etc/munge/munge.key
    mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
    chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    runuser -u munge -- munged --force
    wait_for 10 bash -c 'munge -n | unmunge' || die "munged does not answer"
    cp /run/munge/munged.pid "$DIR/run/munged.started"
}

mysql_answers() { mysqladmin --protocol=socket ping >/dev/null 2>&1; }

start_mariadb() {
    if ! mysql_answers; then
        mkdir -p /run/mysqld "$DIR/log/mariadb" && chown mysql:mysql /run/mysqld "$DIR/log/mariadb"
        setsid mariadbd --user=mysql --log-error="$DIR/log/mariadb/error.log" \
            </dev/null >/dev/null 2>&1 &
        echo $! >"$DIR/run/mysqld.started"
        wait_for 60 mysql_answers || die "MariaDB does not answer; see $DIR/log/mariadb/error.log"
    fi
    # The accounting database and its user; the password is made once and kept in $DIR.
    [[ -s $DIR/etc/db.pass ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/etc/db.pass")
    mariadb --protocol=socket <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$(cat "$DIR/etc/db.pass")';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$(cat "$DIR/etc/db.pass")';
GRANT ALL ON $DB.* TO '$DB_USER'@'localhost';
SQL
}

# A configuration file we may write: absent, or written by this script.
ours_or_absent() {
    [[ ! -e $1 ]] || head -1 "$1" | grep -qF "$MARK" \
        || die "$1 exists and was not written by this script; not replacing it"
}

# The cgroup version Slurm can track processes with here (v1: the freezer hierarchy; v2: the
# unified one), proven by creating and removing a cgroup; nothing when neither works.
cgroup_version() {
    local probe
    if [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
        probe=/sys/fs/cgroup/mabench-probe.$$
        mkdir "$probe" 2>/dev/null && rmdir "$probe" && echo v2
    elif [[ -d /sys/fs/cgroup/freezer ]]; then
        probe=/sys/fs/cgroup/freezer/mabench-probe.$$
        mkdir "$probe" 2>/dev/null && rmdir "$probe" && echo v1
    fi
    return 0
}

# ProctrackType: cgroup where it works (as on production clusters), else linuxproc.
proctrack() {
    local version
    version=$(cgroup_version)
    if [[ ${MABENCH_SLURM_PROCTRACK:-cgroup} == cgroup && -n $version ]]; then
        echo "proctrack/cgroup cgroup/$version"
    else
        [[ ${MABENCH_SLURM_PROCTRACK:-cgroup} == cgroup ]] \
            && say "no writable cgroup hierarchy under /sys/fs/cgroup: tracking processes by parent PID"
        echo "proctrack/linuxproc"
    fi
}

write_configs() {
    ours_or_absent "$CONF_DIR/slurm.conf"
    ours_or_absent "$CONF_DIR/slurmdbd.conf"
    ours_or_absent "$CONF_DIR/cgroup.conf"
    mkdir -p "$CONF_DIR"
    local node tracking plugin
    node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
    [[ $node == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
    read -r tracking plugin <<<"$(proctrack)"
    say "process tracking: $tracking${plugin:+ ($plugin)}"
    rm -f "$CONF_DIR/cgroup.conf"
    if [[ -n $plugin ]]; then
        # Track only: no confinement of cores, memory or devices (one test node, no GPUs).
        cat >"$CONF_DIR/cgroup.conf" <<CONF
$MARK: track job steps' processes only.
CgroupPlugin=$plugin
CgroupMountpoint=/sys/fs/cgroup
IgnoreSystemd=yes
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF
    fi
    cat >"$CONF_DIR/slurm.conf" <<CONF
$MARK: a single-node cluster with accounting.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=$tracking
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
$node
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    (umask 077 && cat >"$CONF_DIR/slurmdbd.conf" <<CONF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$(cat "$DIR/etc/db.pass")
StorageLoc=$DB
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
CONF
    )
}

# Refuse to start next to another Slurm: its daemons hold the ports we need.
check_ports_free() {
    local port
    for port in 6817 6818 6819; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is in use by another program (another Slurm?); stop it first"
        fi
    done
}

start_slurm() {
    if ! pid_alive "$DIR/run/slurmdbd.pid"; then
        pid_alive "$DIR/run/slurmctld.pid" || pid_alive "$DIR/run/slurmd.pid" || check_ports_free
        slurmdbd </dev/null >/dev/null 2>&1
        wait_for 30 sacctmgr -n list cluster || die "slurmdbd does not answer; see $DIR/log/slurmdbd.log"
    fi
    sacctmgr -n list cluster format=cluster%64 | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -n list account format=account%64 | grep -qw "$ACCOUNT" || sacctmgr -i add account "$ACCOUNT" >/dev/null
    sacctmgr -n list user root format=defaultaccount%64 | grep -qw "$ACCOUNT" \
        || sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        slurmctld </dev/null >/dev/null 2>&1
        wait_for 30 scontrol ping || die "slurmctld does not answer; see $DIR/log/slurmctld.log"
    fi
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        slurmd </dev/null >/dev/null 2>&1
    fi
    local host
    host=$(hostname)
    # A node left down or drained by an earlier run comes back.
    if sinfo -h -N -n "$host" -o %T | grep -Eq 'down|drain'; then
        scontrol update nodename="$host" state=resume || true
    fi
    wait_for 60 bash -c "sinfo -h -N -n '$host' -o %T | grep -Eq '^(idle|mixed|allocated)'" \
        || die "node $host did not come up: $(sinfo -N -n "$host" 2>&1); see $DIR/log/slurmd.log"
    local answer
    answer=$(timeout 60 srun -N1 -n1 -t 1 hostname) || die "srun does not run a job"
    [[ $answer == "$host" ]] || die "srun answered $answer, not $host"
}

up() {
    check >/dev/null || die "$(check)"
    install_packages
    mkdir -p "$DIR"/{etc,state,spool,log,run}
    start_munge
    start_mariadb
    write_configs
    start_slurm
    say "up: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT"
}

# Stop a daemon by the PID file it wrote; wait until it is gone.
stop_pid() {
    local pidfile=$1 name=$2
    pid_alive "$pidfile" || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || { say "$name (pid $pid) ignored SIGTERM; killing it"; kill -9 "$pid" 2>/dev/null || true; }
        sleep 0.2
    done
}

down() {
    [[ -d $DIR/run ]] || { say "nothing to stop ($DIR/run does not exist)"; return 0; }
    if pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --state=PENDING,RUNNING --full --quiet --user=root 2>/dev/null || true
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    stop_pid "$DIR/run/slurmd.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    stop_pid "$DIR/run/slurmdbd.pid" slurmdbd
    if [[ -e $DIR/run/mysqld.started ]]; then
        mysqladmin --protocol=socket shutdown 2>/dev/null || true
        stop_pid "$DIR/run/mysqld.started" mariadbd
        rm -f "$DIR/run/mysqld.started"
    fi
    if [[ -e $DIR/run/munged.started ]]; then
        stop_pid "$DIR/run/munged.started" munged
        rm -f "$DIR/run/munged.started"
    fi
    local f
    for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf" "$CONF_DIR/cgroup.conf"; do
        [[ -e $f ]] && head -1 "$f" | grep -qF "$MARK" && rm -f "$f"
    done
    say "down: no daemon of $DIR is left"
}

case ${1:-} in
    check) check ;;
    up) up ;;
    down) down ;;
    *) echo "usage: $0 check|up|down" >&2; exit 2 ;;
esac
