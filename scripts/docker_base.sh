#!/bin/sh
# The Debian bookworm base image every Dockerfile names (ARG BASE), made locally once: Docker Hub
# is not needed. Does nothing when the image exists. Needs root and debootstrap
# (apt-get install debootstrap); the mirror is the one apt uses, or MIRROR.
# Usage: sh scripts/docker_base.sh [TAG]   (default archivechain/debian:bookworm)
set -eu
TAG=${1:-archivechain/debian:bookworm}
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "docker_base: $TAG exists"
  exit 0
fi
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
start=$(date +%s)
debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" >/dev/null
tar -C "$DIR" -c . | docker import - "$TAG" >/dev/null
echo "docker_base: $TAG made from $MIRROR in $(( $(date +%s) - start )) s"
