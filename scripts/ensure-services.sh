#!/usr/bin/env bash
# Make sure Redis answers on 127.0.0.1:6379 and a PostgreSQL on 127.0.0.1:5432 for the tests. Uses the one running if there
# is one; otherwise starts the machine's cluster, or installs PostgreSQL and starts a throwaway
# cluster with trust auth under /tmp (never touching an existing cluster's configuration).
set -euo pipefail
host=127.0.0.1
port="${WARDEN_TEST_PG_PORT:-5432}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
listening() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

# Redis on 127.0.0.1:6379 for cluster mode (the cluster tests start their own redis-server too).
redis_port="${WARDEN_TEST_REDIS_PORT:-6379}"
if ! (exec 3<>"/dev/tcp/$host/$redis_port") 2>/dev/null; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing Redis (for cluster mode and its tests)…"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  echo "starting Redis on $host:$redis_port…"
  redis-server --daemonize yes --bind "$host" --port "$redis_port" --save '' --appendonly no \
    --dir /tmp --logfile /tmp/warden-redis.log
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/$host/$redis_port") 2>/dev/null && break; sleep 0.1; done
fi

if listening; then exit 0; fi

if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  echo "starting PostgreSQL $version…"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do listening && exit 0; sleep 0.2; done
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (for the tests)…"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
data=/tmp/warden-test-pg
if [ ! -f "$data/PG_VERSION" ]; then
  as_root mkdir -p "$data"
  as_root chown postgres:postgres "$data" 2>/dev/null || true
  as_root runuser -u postgres -- "$bindir/initdb" -D "$data" -A trust -U postgres >/dev/null
fi
echo "starting a throwaway PostgreSQL on $host:$port ($data)…"
as_root runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -l "$data/log" \
  -o "-h $host -p $port -k /tmp" start >/dev/null
for _ in $(seq 1 50); do
  if listening; then
    as_root runuser -u postgres -- "$bindir/psql" -h "$host" -p "$port" -U postgres -tc \
      "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 || \
      as_root runuser -u postgres -- "$bindir/createdb" -h "$host" -p "$port" -U postgres test
    exit 0
  fi
  sleep 0.2
done
echo "PostgreSQL did not start; see $data/log" >&2
exit 1
