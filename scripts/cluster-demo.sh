#!/usr/bin/env bash
# `make cluster-demo`: Warden in cluster mode on this machine. Starts PostgreSQL and Redis if
# absent (scripts/ensure-services.sh), then 2 API and 3 worker processes configured only by
# WARDEN_* environment variables, submits tasks through one API process and streams them live
# from the other, and stops everything (SIGTERM, then the demo database is dropped).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"
pg_admin="${WARDEN_DEMO_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
db="warden_cluster_demo"
work=$(mktemp -d /tmp/warden-cluster-demo.XXXXXX)
pids=()

scripts/ensure-services.sh

cleanup() {
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    echo "== stopping ${#pids[@]} processes (SIGTERM)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
  fi
  "$bin/python" - "$pg_admin" "$db" <<'PY' || true
import asyncio, sys
import asyncpg
async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    await conn.execute(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)')
    await conn.close()
asyncio.run(main())
PY
  rm -rf "$work"
  echo "== stopped; the demo database is dropped"
}
trap cleanup EXIT INT TERM

"$bin/python" - "$pg_admin" "$db" <<'PY'
import asyncio, sys
import asyncpg
async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    await conn.execute(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{sys.argv[2]}"')
    await conn.close()
asyncio.run(main())
PY

cat > "$work/script.yaml" <<'YAML'
name: cluster-demo
steps:
  - text: "Let me compute that with the calculator. "
    chunk_size: 4
    chunk_delay: 0.03
    tool_calls: [{name: calculator, arguments: {expression: "6 * 7"}}]
  - text: "6 × 7 = 42. This answer was streamed token by token from a worker process, through Redis, to an API process other than the one that took the task."
    chunk_size: 6
    chunk_delay: 0.03
YAML
cat > "$work/warden.yaml" <<YAML
models:
  default: {provider: scripted, script: $work/script.yaml}
agents:
  - {name: calc, instructions: "You compute things.", tools: [calculator]}
agents_dirs: []
sandbox: {enabled: false}
YAML

# Everything a deployment varies comes from the environment.
export WARDEN_CONFIG="$work/warden.yaml"
export WARDEN_DATABASE_URL="${pg_admin%/*}/$db"
export WARDEN_REDIS_URL="${WARDEN_REDIS_URL:-redis://127.0.0.1:6379/0}"
export WARDEN_LOG_LEVEL=INFO

created=$("$bin/warden" keys create --name cluster-demo --scope admin)
key=$(printf '%s\n' "$created" | sed -n 1p | tr -d '[:space:]')
ports=(8181 8182)
for i in 0 1; do
  WARDEN_HOME="$work/api$i" WARDEN_SERVER__PORT="${ports[$i]}" \
    "$bin/warden" serve --role api >"$work/api$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  WARDEN_HOME="$work/worker$i" "$bin/warden" serve --role worker >"$work/worker$i.log" 2>&1 &
  pids+=($!)
done
echo "== 2 API processes (:${ports[0]}, :${ports[1]}) and 3 workers: PostgreSQL $db, Redis $WARDEN_REDIS_URL"
for port in "${ports[@]}"; do
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "API on :$port did not start:"; cat "$work"/api*.log; exit 1; }
done

for n in 1 2 3; do
  submit_port=${ports[$(( (n - 1) % 2 ))]}
  stream_port=${ports[$(( n % 2 ))]}
  id=$(curl -fsS -X POST "http://127.0.0.1:$submit_port/v1/tasks" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"agent\": \"calc\", \"input\": \"what is 6 * 7? (task $n)\"}" \
    | "$bin/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  echo
  echo "== task $n: $id submitted to :$submit_port, streamed from :$stream_port"
  "$bin/warden" tasks logs "$id" --url "http://127.0.0.1:$stream_port" --api-key "$key"
done
