#!/usr/bin/env bash
# `make compose-test`: the consortium of docker-compose.yml end to end, as a new user runs it: the
# README's "Containers (docker-compose)" blocks, taken from README.md and run as written, in order,
# in one bash at the repository root — build the images, up, wait healthy, create -> archive ->
# proof -> `archivechain verify` against ganache, down, up, the record and its proof are still
# there and verify, down with volumes. Between the blocks this script adds its own checks: every
# container healthy, /docs and the web console's pinned scripts served (200) by the node image,
# the bundle verified inside the container too, and (before the last block) a custody transfer
# from hospital-1 to hospital-2 on PostgreSQL, IPFS and ganache: hospital-2 accepts it, reads the
# record, hospital-1 can no longer decrypt it, and hospital-2's bundle verifies. Needs a Docker engine, docker-compose (or Compose
# v2), debootstrap and root for the first base image, curl, jq, and nothing else listening on the
# compose ports (8545, 5001-5003, 55432, 8601-8603). Prints the time of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-compose >/dev/null || docker-compose() { docker compose "$@"; }
WORK=$(mktemp -d)
WRITTEN="network.json deployment.json summary.txt bundle.json"  # what the README's steps write
WRITTEN="$WRITTEN moved.json"  # and the transfer phase
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "compose-test: FAILED (exit $status); last logs:" >&2
    docker-compose ps >&2 || true
    docker-compose logs --tail=40 >&2 || true
  fi
  docker-compose down --volumes >/dev/null 2>&1 || true
  rm -rf "$WORK"
  # shellcheck disable=SC2086
  (cd . && rm -f $WRITTEN)
  exit "$status"
}
trap cleanup EXIT
trap 'exit 124' TERM INT
for file in $WRITTEN; do
  if [ -e "$file" ]; then echo "compose-test: ./$file exists; move it away first" >&2; exit 2; fi
done

# The services bind fixed ports on the host (network_mode: host). Another consortium still running
# on this machine (a second checkout's compose test, a `make up`) would make ours fail at random
# later on (PostgreSQL: "Address already in use"), so wait until the ports are free — at most
# COMPOSE_TEST_PORT_WAIT seconds (default 900) — and otherwise stop here, naming the holders.
COMPOSE_PORTS="8545 5001 5002 5003 55432 8601 8602 8603"
busy_ports() {
  for port in $COMPOSE_PORTS; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then printf '%s ' "$port"; fi
  done
}
waited=0
while busy=$(busy_ports) && [ -n "$busy" ]; do
  if [ "$waited" -ge "${COMPOSE_TEST_PORT_WAIT:-900}" ]; then
    echo "compose-test: ports still in use after ${waited} s: $busy— stop what holds them:" >&2
    docker ps --format '{{.Names}} ({{.Image}}, compose project {{.Label "com.docker.compose.project"}})' >&2 || true
    ss -ltnp 2>/dev/null | grep -E ":($(echo $busy | tr ' ' '|')) " >&2 || true
    trap - EXIT
    exit 2
  fi
  [ "$waited" -eq 0 ] && echo "compose-test: ports $busy in use (another consortium?); waiting for them" >&2
  sleep 10; waited=$((waited + 10))
done

python3 - "$WORK" <<'PY'
import re, sys
from pathlib import Path
text = Path("README.md").read_text(encoding="utf-8")
start = text.index("## Containers (docker-compose)")
end = text.index("\n## ", start + 1)
blocks = re.findall(r"^```sh\n(.*?)^```", text[start:end], re.MULTILINE | re.DOTALL)
assert len(blocks) == 4, f"README's Containers section has {len(blocks)} sh blocks, not 4"
for number, block in enumerate(blocks, start=1):
    Path(sys.argv[1], f"step{number}.sh").write_text(block, encoding="utf-8")
PY

phase_start=$(date +%s)
phase() {  # print the time since the previous phase
  now=$(date +%s); echo "compose-test: $1 in $(( now - phase_start )) s"; phase_start=$now
}

all_healthy() {  # every long-running service reports healthy (the `until` of the README waits for one)
  for service in chain postgres ipfs-1 ipfs-2 ipfs-3 hospital-1 hospital-2 hospital-3; do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$(docker-compose ps -q "$service")")
    [ "$state" = healthy ] || { echo "compose-test: $service is $state" >&2; return 1; }
  done
  init=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(docker-compose ps -q init)")
  [ "$init" = "exited 0" ] || { echo "compose-test: init is $init" >&2; return 1; }
}

assert_200() {  # URL: the node image serves it
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$1")
  [ "$code" = 200 ] || { echo "compose-test: $1 answered $code, not 200" >&2; return 1; }
}

verify_inside() {  # the node image's own archivechain verifies the bundle
  docker-compose exec -T hospital-1 sh -c 'cat > /tmp/bundle.json && archivechain verify \
    /tmp/bundle.json --rpc http://127.0.0.1:8545 --deployment /consortium/deployment.json' \
    < bundle.json
}

started=$(date +%s)
# shellcheck disable=SC1091
. "$WORK/step1.sh"
phase "step 1 (make images, up, hospital-3 answering)"
sleep 3  # the healthchecks' next round
all_healthy
# /docs (Swagger UI) and the console's scripts: the pinned npm assets are in the node image.
for port in 8601 8602 8603; do
  assert_200 "http://127.0.0.1:$port/docs"
done
for asset in swagger-ui/swagger-ui-bundle.js swagger-ui/swagger-ui.css htmx/htmx.min.js \
    chart.js/chart.umd.js app/dashboard.js; do
  assert_200 "http://127.0.0.1:8601/assets/$asset"
done
echo "compose-test: all services healthy, init done, /docs and the console's assets served"

# shellcheck disable=SC1091
. "$WORK/step2.sh"
verify_inside
phase "step 2 ($ID uploaded, archived, proven, verified outside and inside)"

# shellcheck disable=SC1091
. "$WORK/step3.sh"
all_healthy
verify_inside
phase "step 3 (down, up: $ID and its proof still there and verify)"

# Custody transfer hospital-1 -> hospital-2 (not in the README: its API is in docs/federation.md).
NODE2=$(jq -r '.nodes[1].url' network.json)
TO=$(jq -r '.nodes[1].address' network.json)
AUTH2="Authorization: Bearer $(jq -r '.nodes[1].api_keys.archivist' network.json)"
MOVED=$(curl -fsS -H "$AUTH" -F 'file=@summary.txt;type=text/plain' \
  -F 'metadata={"record_class":"INPATIENT","department":"cardiology","title":"Transferred summary","source_system":"HIS","patient_id":"MRN-0002"}' \
  "$NODE/api/v1/archives" | jq -r .id)
curl -fsS -X POST -H "$AUTH" "$NODE/api/v1/archives/$MOVED/archive" > /dev/null
registered() { [ "$(curl -fsS -H "$AUTH" "$NODE/api/v1/archives/$MOVED" | jq -r .chain_status)" = registered ]; }
accepted() {  # NODE AUTH: the node lists the transfer of $MOVED as accepted
  curl -fsS -H "$2" "$1/api/v1/transfers" \
    | jq -e --arg id "$MOVED" 'any(.[]; .archive_id == $id and .state == "accepted")' > /dev/null
}
within() {  # SECONDS WHAT COMMAND...: retry COMMAND every 2 s until it succeeds
  local limit=$1 what=$2 spent=0; shift 2
  until "$@"; do
    [ "$spent" -lt "$limit" ] || { echo "compose-test: no $what after $limit s" >&2; return 1; }
    sleep 2; spent=$((spent + 2))
  done
}
within 120 "on-chain registration of $MOVED" registered
curl -fsS -X POST -H "$AUTH" -H 'Content-Type: application/json' -d "{\"to\":\"$TO\"}" \
  "$NODE/api/v1/archives/$MOVED/transfers" > /dev/null
within 180 "acceptance at hospital-2" accepted "$NODE2" "$AUTH2"
within 120 "acceptance seen by hospital-1" accepted "$NODE" "$AUTH"
curl -fsS -H "$AUTH2" "$NODE2/api/v1/archives/$MOVED/content?purpose=treatment" | cmp - summary.txt
moved_code=$(curl -sS -o /dev/null -w '%{http_code}' -H "$AUTH" "$NODE/api/v1/archives/$MOVED/content?purpose=treatment")
[ "$moved_code" = 409 ] || { echo "compose-test: hospital-1 answered $moved_code for the moved record, not 409" >&2; exit 1; }
curl -fsS --retry 3 --retry-all-errors -H "$AUTH2" "$NODE2/api/v1/archives/$MOVED/proof?wait=30" -o moved.json
.venv/bin/archivechain verify moved.json --rpc "$(jq -r .rpc_url network.json)" --deployment deployment.json
phase "transfer ($MOVED accepted by hospital-2 on PostgreSQL, read there, refused at hospital-1, verified)"

volumes=$(docker inspect -f '{{range .Mounts}}{{.Name}} {{end}}' $(docker-compose ps -q))
# shellcheck disable=SC1091
. "$WORK/step4.sh"
for volume in $volumes; do
  if docker volume inspect "$volume" >/dev/null 2>&1; then
    echo "compose-test: volume $volume left after down --volumes" >&2; exit 1
  fi
done
phase "step 4 (down --volumes)"
echo "compose-test: passed in $(( $(date +%s) - started )) s"
