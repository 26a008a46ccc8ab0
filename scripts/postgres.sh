#!/usr/bin/env bash
# Installs and starts a local PostgreSQL (Debian's package) for the storage
# tests, listening on 127.0.0.1 only, with a `tete` role. Idempotent. Prints
# the admin URL the tests use to create their own databases.
set -euo pipefail

sudo_cmd=()
as_postgres=(runuser -u postgres --)
if [[ $(id -u) -ne 0 ]]; then
  sudo_cmd=(sudo)
  as_postgres=(sudo -u postgres)
fi
if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql" >&2
  "${sudo_cmd[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  "${sudo_cmd[@]}" pg_createcluster "$version" main >&2
fi
conf="/etc/postgresql/$version/main/postgresql.conf"
grep -q "^listen_addresses = '127.0.0.1'" "$conf" || echo "listen_addresses = '127.0.0.1'" | "${sudo_cmd[@]}" tee -a "$conf" >/dev/null
pg_lsclusters -h | grep "^$version main" | grep -q online || "${sudo_cmd[@]}" pg_ctlcluster "$version" main start >&2
for _ in $(seq 30); do
  "${as_postgres[@]}" psql -qAtc "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.5
done
"${as_postgres[@]}" psql -qAtc "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tete') THEN CREATE ROLE tete LOGIN SUPERUSER PASSWORD 'tete'; END IF; END \$\$;" >&2
port=$("${as_postgres[@]}" psql -qAtc "SHOW port")
echo "postgres://tete:tete@127.0.0.1:$port/postgres"
