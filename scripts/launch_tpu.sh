#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM pod slice.
#
#   scripts/launch_tpu.sh [--dry-run] --tpu NAME --zone ZONE [--project P] [--repo DIR] -- TRAIN_ARGS...
#
# Each worker runs `cd REPO && .venv/bin/python -m scripts.train TRAIN_ARGS` (REPO defaults to ~/fsq,
# a checkout already set up with `make .venv/.installed` on every worker). jax.distributed finds the
# coordinator, process count and index from the TPU metadata, so no flags are needed. --dry-run prints
# the gcloud command instead of running it.
set -euo pipefail

dry_run=0 tpu="" zone="" project="" repo="~/fsq"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (options: --dry-run --tpu --zone --project --repo, then -- TRAIN_ARGS)" >&2; exit 2 ;;
  esac
done
[ -n "$tpu" ] || { echo "--tpu NAME is required" >&2; exit 2; }
[ -n "$zone" ] || { echo "--zone ZONE is required" >&2; exit 2; }
[ $# -gt 0 ] || { echo "training arguments are required after --" >&2; exit 2; }

remote="cd $repo && .venv/bin/python -m scripts.train"
for arg in "$@"; do remote+=" $(printf '%q' "$arg")"; done
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
[ -n "$project" ] && cmd+=(--project "$project")

if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
