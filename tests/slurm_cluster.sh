#!/bin/sh
# tests/slurm_cluster.sh - runs one command against a single-node Slurm
# cluster started here for it, then stops the cluster.
#
#   sh tests/slurm_cluster.sh WORKDIR COMMAND [ARG...]
#
# Starts munged (its own key and socket), slurmctld and slurmd (free TCP
# ports, a minimal slurm.conf, state, spool and logs, all in WORKDIR, which
# must not exist or be empty), waits until the node is idle, runs COMMAND
# with SLURM_CONF set (so sbatch, squeue and scontrol talk to this cluster),
# and stops every daemon it started on any exit (trap), also when COMMAND
# fails or the script is interrupted.  Nothing outside WORKDIR is touched:
# other clusters or munge daemons on the machine are not seen.
#
# Needs Debian's slurm-wlm and munge; runs as root or as any user (the
# daemons and jobs run as that user).  Exit status: COMMAND's; 77 with a
# message on stderr ("slurm: skipped: ...") when the packages are missing or
# the daemons do not start (their logs are named).
set -u
[ $# -ge 2 ] || { echo "usage: $0 WORKDIR COMMAND [ARG...]" >&2; exit 2; }
W=$1; shift
skip() { echo "slurm: skipped: $*" >&2; exit 77; }

for p in munged mungekey slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || skip "$p not found (apt-get install slurm-wlm munge)"
done
PATH=$PATH:/usr/sbin
mkdir -p "$W" || exit 2
W=$(cd "$W" && pwd)
chmod 700 "$W"
mkdir -p "$W/state" "$W/spool" || exit 2

pids=""
stop() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    # slurmd's job steps (slurmstepd) die with their jobs; wait for the daemons
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$p" 2>/dev/null
    done
}
trap stop EXIT
trap 'exit 130' INT TERM

# two free TCP ports (bound once by the kernel's choice, then released)
ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' 2>/dev/null) || ports=""
[ -n "$ports" ] || ports="$((20000 + $$ % 20000)) $((40001 + $$ % 20000))"
ctl_port=${ports% *}; d_port=${ports#* }
host=$(hostname -s 2>/dev/null || hostname)
user=$(id -un)
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)

# munge: a key and a socket of our own
mungekey --create --keyfile="$W/munge.key" >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$W/munge.key" bs=1024 count=1 2>/dev/null
chmod 600 "$W/munge.key"
munged -F -f --socket="$W/munge.sock" --key-file="$W/munge.key" --pid-file="$W/munged.pid" \
    --log-file="$W/munged.log" --seed-file="$W/munged.seed" >/dev/null 2>&1 &
pids="$pids $!"

cat > "$W/slurm.conf" <<CONF
ClusterName=aestest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$W/munge.sock
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
SLURM_CONF=$W/slurm.conf
export SLURM_CONF

i=0
while [ ! -S "$W/munge.sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$W/munge.sock" ] || skip "munged did not start (see $W/munged.log)"
slurmctld -D -i -f "$SLURM_CONF" >"$W/slurmctld.out" 2>&1 &
pids="$pids $!"
slurmd -D -f "$SLURM_CONF" -N "$host" >"$W/slurmd.out" 2>&1 &
pids="$pids $!"
i=0
state=""
while [ $i -lt 150 ]; do        # up to 15 s for the node to register
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1)
    case $state in idle*) break ;; esac
    sleep 0.1; i=$((i + 1))
done
case $state in
idle*) ;;
*) skip "the node did not become idle (state '${state:-none}'; see $W/slurmctld.log and $W/slurmd.log)" ;;
esac
"$@"
