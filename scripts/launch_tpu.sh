#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM pod slice, detached from the SSH
# session, then waits for it.
#
#   scripts/launch_tpu.sh [--dry-run] [--detach] --tpu NAME --zone ZONE [--project P] [--repo DIR] \
#       [--name JOB] [--module M] -- TRAIN_ARGS...
#
# On each worker, in REPO (default ~/fsq, a checkout set up with `make .venv/.installed` on every worker),
# `.venv/bin/python -m MODULE TRAIN_ARGS` (MODULE: scripts.train, or another job of every process such as
# scripts.pretokenize or scripts.evaluate) starts in its own session (setsid, nohup, no terminal)
# with its output in REPO/logs/JOB.log, its pid in JOB.pid and, when it ends, its exit status in JOB.rc:
# a dropped SSH session, a closed laptop or a killed launcher leave the training running. jax finds the
# coordinator, process count and index from the TPU metadata (fsq/train/distributed.py), so no flags are
# needed. Starting a job whose pid is still alive on a worker attaches to it instead of starting a
# second copy, so the same command re-attaches after a dropped connection.
#
# Then the launcher waits on worker 0 until the job ends and exits with its status (--detach: returns
# at once). Watch it: gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 \
#   --command "tail -f REPO/logs/JOB.log"
# --dry-run prints the gcloud commands instead of running them. FSQ_TPU_SSH=local runs the remote
# commands in a local bash instead of over gcloud (one "worker": how the tests exercise this script).
set -euo pipefail

dry_run=0 detach=0 tpu="" zone="" project="" repo="~/fsq" name="train" module="scripts.train"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --detach) detach=1; shift ;;
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --module) module="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (options: --dry-run --detach --tpu --zone --project --repo --name --module, then -- TRAIN_ARGS)" >&2; exit 2 ;;
  esac
done
[ -n "$tpu" ] || { echo "--tpu NAME is required" >&2; exit 2; }
[ -n "$zone" ] || { echo "--zone ZONE is required" >&2; exit 2; }
[ $# -gt 0 ] || { echo "training arguments are required after --" >&2; exit 2; }
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "--name must be letters, digits, '.', '_' or '-', got '$name'" >&2; exit 2; }
[[ "$module" =~ ^scripts\.[a-z_]+$ ]] || { echo "--module must be scripts.NAME, got '$module'" >&2; exit 2; }

train=".venv/bin/python -m $module"
for arg in "$@"; do train+=" $(printf '%q' "$arg")"; done
job="logs/$name"
# Start unless this worker's job is alive; the training's exit status lands in JOB.rc.
start="cd $repo && mkdir -p logs && if [ -f $job.pid ] && kill -0 \$(cat $job.pid) 2>/dev/null; then"
start+=" echo \"\$(hostname): $name is running (pid \$(cat $job.pid)): attaching\"; else rm -f $job.rc;"
inner="$train; echo \$? > $job.rc"
start+=" setsid nohup bash -c $(printf '%q' "$inner") > $job.log 2>&1 < /dev/null & echo \$! > $job.pid;"
start+=" echo \"\$(hostname): started $name (pid \$(cat $job.pid)), log $repo/$job.log\"; fi"
# Wait until the job's process is gone, then exit with its status (no JOB.rc: killed without a status).
wait="cd $repo && while kill -0 \$(cat $job.pid) 2>/dev/null; do sleep ${FSQ_TPU_POLL_S:-10}; done;"
wait+=" tail -n 5 $job.log;"
wait+=" if [ -f $job.rc ]; then exit \$(cat $job.rc); fi; echo '$name ended without an exit status' >&2; exit 1"

remote() {  # remote WORKERS COMMAND
  if [ "${FSQ_TPU_SSH:-}" = local ]; then
    cmd=(bash -c "$2")
  else
    cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker="$1" --command "$2")
    [ -n "$project" ] && cmd+=(--project "$project")
  fi
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}"
  fi
}

remote all "$start"
[ "$detach" = 1 ] || remote 0 "$wait"
