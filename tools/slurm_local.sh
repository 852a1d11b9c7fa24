#!/usr/bin/env bash
# A single-node Slurm cluster on this machine for the Slurm tests (tests/slurm.rs): Debian's
# slurm-wlm and munge, slurmctld and slurmd on localhost, one partition `debug`.
#
#   tools/slurm_local.sh start   # installs (apt, needs root) if missing, configures, starts
#   tools/slurm_local.sh stop    # stops the daemons
#
# No cgroups (proctrack/linuxproc, task/none), so it also runs in a container. The configuration
# lives in /etc/slurm/slurm.conf, state under /var/spool/slurm*, logs under /var/log/slurm/.
set -euo pipefail

start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            echo "slurm_local: slurm-wlm and munge are not installed and this is not root" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
    fi
    local host node
    host=$(hostname -s)
    # The node's CPUs, sockets, cores and memory as slurmd sees them.
    node=$(slurmd -C | head -n 1 | sed 's/ UpTime=.*//')
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    cat >/etc/slurm/slurm.conf <<CONF
ClusterName=weakalign-test
SlurmctldHost=${host}
AuthType=auth/munge
# Requeued tasks may start again after 10 s (default 120: the credential lifetime).
AuthInfo=cred_expire=10
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
${node}
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || runuser -u munge -- munged --force 2>/dev/null || munged --force
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "slurm_local: the node did not come up; logs:" >&2
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
