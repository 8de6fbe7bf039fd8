#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests and for trying hydra/launcher=slurm:
#
#   .ci/slurm_cluster.sh install   apt-get install slurm-wlm munge, unless installed (Debian/Ubuntu)
#   .ci/slurm_cluster.sh start     munged + slurmctld + slurmd, one partition "debug" (idempotent)
#   .ci/slurm_cluster.sh status    exit 0 when the cluster answers and its node is up
#   .ci/slurm_cluster.sh stop      cancel its jobs and stop the daemons it started
#
# Run as root (the daemons and the jobs run as root here; nothing is isolated: no cgroups,
# no accounting). The node's CPUs and memory come from `slurmd -C`. The config goes to
# $SLURM_CONF (default /etc/slurm/slurm.conf, where sbatch looks); a slurm.conf this script
# did not write is never overwritten. State and daemon logs: $SLURM_LOCAL_DIR
# (default /var/spool/slurm-local). Every daemon's output goes to a log file there, so a
# caller's terminal or pipe is never held open by them.
set -euo pipefail

CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
DIR="${SLURM_LOCAL_DIR:-/var/spool/slurm-local}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
MARKER="# Written by .ci/slurm_cluster.sh"
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF="$CONF"

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "run as root: the daemons (and the test jobs) run as root"
}

need_binaries() {
    local missing=()
    for b in munged slurmctld slurmd sbatch sinfo scontrol; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
    done
    [ ${#missing[@]} = 0 ] ||
        die "not installed: ${missing[*]}. Install with: $0 install (apt-get install slurm-wlm munge)"
}

install() {
    if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then
        [ -x /usr/sbin/munged ] && return 0
    fi
    need_root
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

# Alive = the pid in the file is a running process (a stale file from a killed daemon is not).
alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

node_up() {
    local state
    state="$(timeout 5 sinfo -h -p "$PARTITION" -o %T 2>/dev/null | head -1)" || return 1
    case "$state" in idle* | mixed* | allocated* | completing*) return 0 ;; *) return 1 ;; esac
}

write_config() {
    local host node
    host="$(hostname -s)"
    # `slurmd -C` prints this machine's NodeName/CPUs/Sockets/Cores/Threads/RealMemory line.
    node="$(/usr/sbin/slurmd -C | head -1)"
    [[ "$node" == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching it (set SLURM_CONF)"
    fi
    mkdir -p "$(dirname "$CONF")" "$DIR/ctld" "$DIR/d"
    cat >"$CONF" <<EOF
$MARKER: a single-node test cluster.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups and no accounting: processes are tracked through /proc, nothing is limited.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# A node that was down (a restart of slurmd) comes back by itself.
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=30
# Finished jobs stay visible to squeue/scontrol for 5 minutes.
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    [ -S "$MUNGE_SOCKET" ] && munge -n </dev/null >/dev/null 2>&1 && return 0
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        runuser -u munge -- /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged --force </dev/null >>"$DIR/munged.out" 2>&1
    for _ in $(seq 50); do
        munge -n </dev/null >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not start; see /var/log/munge/munged.log"
}

start() {
    need_root
    need_binaries
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && node_up; then
        echo "SLURM is already running: partition $PARTITION ($CONF)"
        return 0
    fi
    mkdir -p "$DIR"
    write_config
    start_munge
    # -c: forget jobs of an earlier cluster, so a restart never re-runs stale jobs.
    alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -c </dev/null >>"$DIR/slurmctld.out" 2>&1
    alive "$DIR/slurmd.pid" || /usr/sbin/slurmd </dev/null >>"$DIR/slurmd.out" 2>&1
    for _ in $(seq 150); do
        if node_up; then
            echo "SLURM is running: partition $PARTITION, $(sinfo -h -o '%c CPUs, %m MB' | head -1)" \
                "($CONF; logs in $DIR)"
            return 0
        fi
        sleep 0.2
    done
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    node_up && return 0
    die "the node did not come up in 30 s; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

stop() {
    if command -v scancel >/dev/null 2>&1 && alive "$DIR/slurmctld.pid"; then
        scancel --full --signal=KILL --user=root >/dev/null 2>&1 || true
        sleep 1
    fi
    for daemon in slurmd slurmctld; do
        if alive "$DIR/$daemon.pid"; then
            kill "$(cat "$DIR/$daemon.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 100); do
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || break
        sleep 0.1
    done
    # munged may serve other users of this machine; it is stopped only where this script
    # started it (its output file is ours).
    if [ -f "$DIR/munged.out" ] && [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$DIR/munged.out"
    fi
    echo "SLURM stopped"
}

status() {
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && node_up; then
        sinfo
        return 0
    fi
    echo "SLURM is not running (start it with: $0 start)" >&2
    return 1
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
