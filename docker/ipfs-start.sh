#!/bin/sh
# Initialise the repo once (offline: no swarm, no bootstrap, no gateway), clear a stale lock left
# by a killed daemon, then run the daemon in the foreground. The API listens on 127.0.0.1 at
# IPFS_API_PORT (default 5001): each hospital has its own daemon (docker-compose.yml).
set -eu
port="${IPFS_API_PORT:-5001}"
if [ ! -f "$IPFS_PATH/config" ]; then
  jsipfs init --emptyRepo
  jsipfs config --json Addresses '{"Swarm": [], "Announce": [], "NoAnnounce": [], "Gateway": "", "RPC": "", "API": "/ip4/127.0.0.1/tcp/'"$port"'"}'
  jsipfs config --json Bootstrap '[]'
fi
rm -rf "$IPFS_PATH/repo.lock" "$IPFS_PATH/api"
jsipfs config Addresses.API "/ip4/127.0.0.1/tcp/$port"  # also for a repo made with another port
exec jsipfs daemon --offline
