#!/usr/bin/env bash
# Records real etcd 3.4's answers for the golden test (src/mvcc/tests/golden.rs).
#
# Starts a throw-away etcd on free local ports with a temporary data dir, runs every step
# of cases.jsonl against it in order (etcdctl commands with -w json, or JSON requests to
# etcd's gRPC gateway for what etcdctl cannot express), and writes golden.json: for each
# step the step itself and etcd's answer in a canonical form that the Rust test rebuilds
# from KvStore's responses:
#   - header: only `revision` (cluster_id, member_id, raft_term dropped);
#   - int64 fields as JSON numbers, key/value bytes as strings, defaults omitted;
#   - txn responses as {"response_range"|"response_put"|...: {...}} (gateway style);
#   - errors as {"error": "<grpc message>"} (+ "code" when the gateway reports it).
#
# Usage: src/mvcc/testdata/record.sh   (needs etcd, etcdctl, curl, jq)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cases=$here/cases.jsonl
out=$here/golden.json

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p"; then echo "$p"; return; fi
    done
}
client=$(pick_port)
peer=$(pick_port)
while [ "$peer" = "$client" ]; do peer=$(pick_port); done

data=$(mktemp -d)
log=$data.log
etcd --name golden --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "golden=http://127.0.0.1:$peer" >"$log" 2>&1 &
etcd_pid=$!
cleanup() { kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT

url=http://127.0.0.1:$client
for _ in $(seq 100); do
    curl -sf "$url/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "$url/health" >/dev/null || { echo "etcd did not start:"; cat "$log"; exit 1; }

# Canonical form of a response (see above).
canon='
def snake: [splits("(?=[A-Z])")] | map(select(. != "") | ascii_downcase) | join("_");
walk(
  if type == "object" then
    (if has("Response") then (.Response | to_entries[0] | {(.key | snake): .value}) else . end)
    | with_entries(
        if (.key == "key" or .key == "value") and (.value | type) == "string" then .value |= @base64d
        elif (.key | IN("revision", "create_revision", "mod_revision", "version", "lease", "count", "deleted"))
             and (.value | type) == "string" then .value |= tonumber
        else . end)
    | del(.cluster_id, .member_id, .raft_term)
  else . end)'

# Request bytes fields go to the gateway base64-encoded.
to_gateway='walk(if type == "object" then with_entries(
  if (.key | IN("key", "range_end", "value")) and (.value | type) == "string" then .value |= @base64 else . end)
  else . end)'

n=0
echo "[" >"$out"
while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    if echo "$line" | jq -e 'has("ctl")' >/dev/null; then
        mapfile -t args < <(echo "$line" | jq -r '.ctl[]')
        # jq -j and the sentinel keep the trailing blank lines etcdctl txn needs.
        stdin=$(echo "$line" | jq -j '.stdin // ""'; echo x)
        stdin=${stdin%x}
        set +e
        stdout=$(printf '%s' "$stdin" | etcdctl --endpoints="127.0.0.1:$client" -w json "${args[@]}" 2>"$data.err")
        rc=$?
        set -e
        if [ $rc -eq 0 ]; then
            expect=$(echo "$stdout" | jq -c "$canon")
        else
            msg=$(grep '^Error: ' "$data.err" | tail -1 | sed 's/^Error: //')
            expect=$(jq -cn --arg m "$msg" '{error: $m}')
        fi
    else
        rpc=$(echo "$line" | jq -r '.rpc')
        case "$rpc" in
            range | put | deleterange | txn | compaction) path=kv/$rpc ;;
            lease_grant) path=lease/grant ;;
            lease_revoke) path=kv/lease/revoke ;;
            *) echo "unknown rpc $rpc"; exit 1 ;;
        esac
        body=$(echo "$line" | jq -c ".req | $to_gateway")
        resp=$(curl -s -X POST "$url/v3/$path" -d "$body")
        if echo "$resp" | jq -e 'has("error")' >/dev/null; then
            expect=$(echo "$resp" | jq -c '{error: .message, code: .code}')
        else
            expect=$(echo "$resp" | jq -c "$canon")
        fi
    fi
    [ $n -gt 0 ] && echo "," >>"$out"
    jq -cn --argjson step "$line" --argjson expect "$expect" '{step: $step, expect: $expect}' >>"$out"
    n=$((n + 1))
done <"$cases"
echo "]" >>"$out"
echo "recorded $n steps from $(etcd --version | head -1) into $out"
