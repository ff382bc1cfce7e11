#!/bin/sh
# `make compose-test`: the consortium of docker-compose.yml, end to end, as a user runs it.
# build (make images, done by the caller), up, wait healthy, create -> archive -> proof ->
# `archivechain verify` against the chain, down, up, the record and its proof are still there and
# verify, down with volumes. Needs a Docker engine, the images, and nothing else listening on the
# compose ports (8545, 5001, 55432, 8601-8603).
set -eu
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE="docker-compose"; fi
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-archivechain-compose-test}"
mkdir -p secrets
[ -f secrets/keystore_passphrase ] || printf '%s' archivechain-dev-passphrase > secrets/keystore_passphrase
URL=http://127.0.0.1:8601
WORK=$(mktemp -d)
trap '$COMPOSE down --volumes >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

wait_healthy() {
  deadline=$(( $(date +%s) + ${COMPOSE_TEST_TIMEOUT:-300} ))
  for service in hospital-1 hospital-2 hospital-3; do
    while :; do
      id=$($COMPOSE ps -q "$service" || true)
      state=$( [ -n "$id" ] && docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo none)
      [ "$state" = healthy ] && break
      if [ "$(date +%s)" -gt "$deadline" ]; then
        echo "compose-test: $service not healthy ($state)" >&2; $COMPOSE logs --tail=50 >&2; exit 1
      fi
      sleep 2
    done
  done
}

verify() {  # verify the bundle in $WORK/bundle.json with the node image's archivechain
  $COMPOSE exec -T hospital-1 sh -c 'cat > /tmp/bundle.json && archivechain verify /tmp/bundle.json \
      --rpc http://127.0.0.1:8545 --deployment /consortium/deployment.json' < "$WORK/bundle.json"
}

start=$(date +%s)
$COMPOSE up -d
wait_healthy
echo "compose-test: healthy after $(( $(date +%s) - start )) s"
KEY=$($COMPOSE exec -T hospital-1 python3 -c \
  'import json; print(json.load(open("/consortium/network.json"))["nodes"][0]["api_keys"]["archivist"])')
AUTH="Authorization: Bearer $KEY"
printf 'discharge summary (compose test)\n' > "$WORK/summary.txt"
ID=$(curl -fsS -H "$AUTH" -F "file=@$WORK/summary.txt;type=text/plain" \
  -F 'metadata={"record_class":"INPATIENT","department":"cardiology","title":"Discharge summary","source_system":"HIS","patient_id":"MRN-0001"}' \
  "$URL/api/v1/archives" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X POST -H "$AUTH" "$URL/api/v1/archives/$ID/archive" > /dev/null
curl -fsS -H "$AUTH" "$URL/api/v1/archives/$ID/proof?wait=60" > "$WORK/bundle.json"
verify
echo "compose-test: $ID archived, proven and verified"

$COMPOSE down
$COMPOSE up -d
wait_healthy
curl -fsS -H "$AUTH" "$URL/api/v1/archives/$ID" > /dev/null
curl -fsS -H "$AUTH" "$URL/api/v1/archives/$ID/proof?wait=60" > "$WORK/bundle.json"
verify
echo "compose-test: after down and up, $ID and its proof are still there and verify"
echo "compose-test: passed in $(( $(date +%s) - start )) s"
