#!/bin/bash
# A one-node Slurm cluster on this machine, for tests and trials: munged, slurmctld and slurmd
# started as plain daemons (no systemd needed), from Debian's packages (slurmctld slurmd
# slurm-client munge).
#
#   docker/slurm/local-cluster.sh start     # write slurm.conf, start the daemons, wait for the node
#   docker/slurm/local-cluster.sh status    # exit 0 when the node is idle and takes jobs
#   docker/slurm/local-cluster.sh stop
#
# Runs as root. ProctrackType=proctrack/linuxproc and TaskPlugin=task/none need no cgroups, so it
# works in a container; the node is this host (`hostname`) with CPUS cores (default 2). No
# accounting database: a job's end is read with `scontrol show job` (kept MinJobAge seconds).
set -euo pipefail

CPUS=${CPUS:-2}
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
NODE=$(hostname)

write_conf() {
    mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=flowlocal
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

running() {   # the daemon of this pid file is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {
    sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1
}

start() {
    for cmd in munged slurmctld slurmd sinfo; do
        command -v "$cmd" >/dev/null || { echo "local-cluster: $cmd not installed" >&2; exit 1; }
    done
    write_conf
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    running /run/munge/munged.pid || runuser -u munge -- munged
    running /run/slurmctld.pid || slurmctld
    running /run/slurmd.pid || slurmd
    for _ in $(seq 1 60); do
        case "$(node_state)" in
            idle|idle\**|mixed|allocated) echo "local-cluster: node $NODE up ($CPUS cpus)"; return 0 ;;
            down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    echo "local-cluster: node $NODE did not come up; see /var/log/slurm/" >&2
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
}

stop() {
    # by the pids the daemons wrote, never by name
    for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
        if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) case "$(node_state)" in idle*|mixed*|allocated*) exit 0 ;; *) exit 1 ;; esac ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
