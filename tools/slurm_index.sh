#!/bin/sh
# slurm_index.sh - index a large collection on a Slurm cluster: N shard
# builds as one job array, then the merge as a job that starts when every
# shard has finished (afterok).
#
# Submit (on a login node, from a folder every node sees):
#
#   tools/slurm_index.sh submit N OUT --model M [--head H] [build options] DIR...
#
# which runs
#
#   sbatch --array=0-(N-1) tools/slurm_index.sh shard N OUT ...    (one task per shard)
#   sbatch --dependency=afterok:<array job> tools/slurm_index.sh merge N OUT
#
# Task K writes OUT.shardK-of-N (`aesalign index build --shard K/N`); the
# merge writes OUT (`aesalign index merge`, atomic, under OUT.lock) and
# keeps the shard files.  A failed task is re-run alone with
#   sbatch --array=K tools/slurm_index.sh shard N OUT ...
# (a rebuilt shard holds the same files: the shard of a file is a hash of
# its path relative to DIR) and the merge is then submitted again with
#   sbatch tools/slurm_index.sh merge N OUT
#
# sbatch options (partition, time, --cpus-per-task, ...) go in
# $AES_SBATCH_OPTS (keep the environment: --export=ALL, sbatch's default); the
# CLI is $AESALIGN (a command, e.g. with a runner before it; default
# build/aesalign next to this script, an absolute path the jobs inherit).  Each task uses the cores Slurm gives it ($AES_THREADS is
# set to $SLURM_CPUS_PER_TASK when that is set).  The shard and merge
# roles can also run by hand (K from $SLURM_ARRAY_TASK_ID).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
AESALIGN=${AESALIGN:-$here/../build/aesalign}

usage() {
    echo "usage: $0 submit N OUT --model M [--head H] [build options] DIR..." >&2
    echo "       $0 shard  N OUT --model M [...] DIR...   (inside an array task)" >&2
    echo "       $0 merge  N OUT" >&2
    exit 2
}

[ $# -ge 3 ] || usage
role=$1; n=$2; out=$3; shift 3
case $n in ''|*[!0-9]*) echo "$0: N must be a positive number, not '$n'" >&2; exit 2 ;; esac
[ "$n" -ge 1 ] || usage

case $role in
submit)
    [ $# -ge 1 ] || usage
    command -v sbatch >/dev/null || { echo "$0: sbatch not found (is Slurm installed here?)" >&2; exit 1; }
    # the jobs run a copy of this script from Slurm's spool: they get the
    # CLI's path from here (sbatch passes the environment on by default)
    export AESALIGN
    # shellcheck disable=SC2086
    jid=$(sbatch --parsable ${AES_SBATCH_OPTS:-} --job-name=aes-shard --array=0-$((n - 1)) \
          --output="$out.shard%a-of-$n.log" "$here/slurm_index.sh" shard "$n" "$out" "$@")
    jid=${jid%%;*}
    # shellcheck disable=SC2086
    mid=$(sbatch --parsable ${AES_SBATCH_OPTS:-} --job-name=aes-merge --dependency=afterok:"$jid" \
          --output="$out.merge.log" "$here/slurm_index.sh" merge "$n" "$out")
    echo "shards: job $jid (array 0-$((n - 1))), merge: job ${mid%%;*} -> $out"
    ;;
shard)
    k=${SLURM_ARRAY_TASK_ID:?"not inside an array task (set SLURM_ARRAY_TASK_ID=K to run shard K by hand)"}
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then AES_THREADS=$SLURM_CPUS_PER_TASK; export AES_THREADS; fi
    exec $AESALIGN index build --shard "$k/$n" --out "$out.shard$k-of-$n" --quiet "$@"
    ;;
merge)
    set --
    k=0
    while [ "$k" -lt "$n" ]; do set -- "$@" "$out.shard$k-of-$n"; k=$((k + 1)); done
    exec $AESALIGN index merge "$out" "$@"
    ;;
*) usage ;;
esac
