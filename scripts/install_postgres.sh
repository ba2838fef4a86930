#!/usr/bin/env bash
# Install the PostgreSQL server binaries the store tests start a throwaway cluster from
# (tests/service/pg.py: initdb + pg_ctl in a temp dir, as the `postgres` user when run as root).
# Debian package: postgresql (postgresql-15 on bookworm). Nothing is started here.
#   bash scripts/install_postgres.sh
# Alternatively point the tests at an existing server:
#   PHITUNE_TEST_POSTGRES_URL=postgresql+psycopg://user:pass@host:5432/db
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    echo "PostgreSQL binaries present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql
# the Debian package starts a cluster on install where it can; the tests do not need it
$SUDO service postgresql stop 2>/dev/null || true
ls -d /usr/lib/postgresql/*/bin
