#!/bin/sh
# `make images`: the base image (once) while the build contexts are staged on the host, then the
# four images built in parallel (their steps are mostly waits on apt's mirror and on the disk),
# each one's output in build/docker/NAME.log, shown when it fails. Prints each phase's time.
# Usage: sh scripts/docker_images.sh BASE PYTHON
set -eu
cd "$(dirname "$0")/.."
BASE=${1:-archivechain/debian:bookworm}
PYTHON=${2:-.venv/bin/python}
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
sh scripts/docker_base.sh "$BASE" > "$log" 2>&1 &
base=$!
"$PYTHON" scripts/docker_context.py
if ! wait "$base"; then cat "$log" >&2; exit 1; fi
cat "$log"
echo "images: base and contexts in $(( $(date +%s) - start )) s"
pids=""
for image in node:latest ganache:7.9.2 postgres:15 ipfs:0.66.1; do
  name=${image%%:*}
  docker build --network host --build-arg BASE="$BASE" -t "archivechain-$image" \
    -f "docker/$name.Dockerfile" "build/docker/$name" > "build/docker/$name.log" 2>&1 &
  pids="$pids $name:$!"
done
failed=0
for entry in $pids; do
  if wait "${entry#*:}"; then
    echo "images: archivechain-${entry%%:*} built ($(( $(date +%s) - start )) s)"
  else
    echo "images: archivechain-${entry%%:*} FAILED; its build output:" >&2
    tail -n 40 "build/docker/${entry%%:*}.log" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1
echo "images: all four in $(( $(date +%s) - start )) s"
