#!/usr/bin/env bash
# Brings up what quizworker and its tests need on 127.0.0.1: Redis (6379) and PostgreSQL (5432,
# user `postgres` without a password, databases `test` and `quizworker`), plus the Python
# `redis` package the integration tests use, and `systemd-analyze` (Debian's `systemd` package;
# the tests check the unit file with it; nothing is started through systemd), and for the export
# tests poppler-utils, qpdf and the fonts of config.toml's [exports], and for the email tests
# Debian's python3-aiosmtpd (tests/smtp_sink.py, a real SMTP server run by /usr/bin/python3) and
# python3-dkim (dkimpy: tests/dkim_verify.py checks the daemon's DKIM signatures with it), and
# for the web tier tests the Python package standardwebhooks and the Node producer's packages.
# Idempotent: a quick no-op when all is already up.
# Made for Debian 12 as root, without systemd (services are started directly).
set -euo pipefail

DEADLINE_SECS="${SERVICES_DEADLINE_SECS:-60}"
REDIS_LOG=/var/log/redis/ci.log

say() { echo "services: $*"; }
die() {
    echo "services: ERROR: $*" >&2
    exit 1
}

# Root runs apt-get and pg_ctlcluster itself; anyone else goes through sudo when there is one.
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi
as_root() {
    if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "need root (or sudo) to run: $*"
    fi
    "${SUDO[@]}" "$@"
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
            die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

# ---------------------------------------------------------------------------------------------
# 1. Packages: install only what is missing.
# ---------------------------------------------------------------------------------------------
pg_server_present() {
    command -v pg_ctlcluster >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

missing=()
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    missing+=(redis-server)
fi
if ! pg_server_present; then
    missing+=(postgresql)
fi
if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
    missing+=(postgresql-client)
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    missing+=(systemd)
fi
# The export tests read PDFs back (pdftotext, pdftoppm, qpdf), print names in every script with
# the Noto fonts config.toml's [exports] lists, and check the shaping against hb-shape.
if ! command -v pdftotext >/dev/null 2>&1; then
    missing+=(poppler-utils)
fi
if ! command -v qpdf >/dev/null 2>&1; then
    missing+=(qpdf)
fi
[[ -f /usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf ]] || missing+=(fonts-noto-core)
[[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ]] || missing+=(fonts-noto-cjk)
command -v hb-shape >/dev/null 2>&1 || missing+=(libharfbuzz-bin)
# The email tests' SMTP server (tests/smtp_sink.py) runs on Debian's own interpreter, which
# takes its packages from apt (the `python3` on PATH may be another one).
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    missing+=(python3-aiosmtpd)
fi
# The DKIM tests verify signatures with an implementation other than lettre's: dkimpy.
if ! /usr/bin/python3 -c 'import dkim' >/dev/null 2>&1; then
    missing+=(python3-dkim)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
else
    say "redis-server, postgresql, postgresql-client, systemd, poppler-utils, qpdf, Noto fonts, hb-shape, aiosmtpd, dkim: installed"
fi

# ---------------------------------------------------------------------------------------------
# 2. Redis: start it if it does not answer.
# ---------------------------------------------------------------------------------------------
redis_up() { [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }

if redis_up; then
    say "redis: already running"
else
    say "redis: starting"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile "$REDIS_LOG" ||
        say "redis: redis-server exited non-zero; waiting anyway"
fi

# ---------------------------------------------------------------------------------------------
# 3. PostgreSQL: the newest installed version's `main` cluster; create it if absent, start it.
# ---------------------------------------------------------------------------------------------
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

PG_VERSION="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z $PG_VERSION ]]; then
    # No cluster yet (postgresql-common may be set not to create one): use the newest server.
    PG_VERSION="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n $PG_VERSION ]] || die "no PostgreSQL server found under /usr/lib/postgresql"
fi
PG_HBA="/etc/postgresql/$PG_VERSION/main/pg_hba.conf"
PG_LOG="/var/log/postgresql/postgresql-$PG_VERSION-main.log"

if pg_up; then
    say "postgres $PG_VERSION: already running"
else
    if [[ ! -f /etc/postgresql/$PG_VERSION/main/postgresql.conf ]]; then
        say "postgres $PG_VERSION: creating cluster main"
        as_root pg_createcluster "$PG_VERSION" main >/dev/null || die "pg_createcluster $PG_VERSION main failed"
    fi
    say "postgres $PG_VERSION: starting"
    # Exits non-zero when the cluster is already running; the wait below decides.
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start ||
        say "postgres: pg_ctlcluster start exited non-zero; waiting anyway"
fi

# ---------------------------------------------------------------------------------------------
# 4. Wait until both answer.
# ---------------------------------------------------------------------------------------------
deadline=$((SECONDS + DEADLINE_SECS))
until redis_up && pg_up; do
    if ((SECONDS >= deadline)); then
        redis_up || {
            echo "--- tail of $REDIS_LOG" >&2
            tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
        }
        pg_up || {
            echo "--- tail of $PG_LOG" >&2
            tail -n 20 "$PG_LOG" >&2 2>/dev/null || true
        }
        redis_up || die "redis did not answer PING on 127.0.0.1:6379 within ${DEADLINE_SECS}s"
        die "postgres did not accept connections on 127.0.0.1:5432 within ${DEADLINE_SECS}s"
    fi
    sleep 0.5
done
say "redis and postgres: ready"

# ---------------------------------------------------------------------------------------------
# 5. Postgres: user `postgres` without a password over TCP from 127.0.0.1.
# ---------------------------------------------------------------------------------------------
export PGCONNECT_TIMEOUT=5
unset PGPASSWORD PGSERVICE PGUSER PGDATABASE PGHOST PGPORT 2>/dev/null || true
pg() { psql -X -w -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

if pg -tAc 'select 1' >/dev/null 2>&1; then
    say "postgres: trust login over TCP works"
else
    say "postgres: enabling trust for 127.0.0.1/32 and ::1/128 in $PG_HBA"
    [[ -f $PG_HBA ]] || die "$PG_HBA not found"
    marker="# quizworker scripts/services.sh: local TCP without a password"
    if ! grep -qF "$marker" "$PG_HBA"; then
        # First matching line wins, so these go on top.
        tmp="$(mktemp)"
        {
            echo "$marker"
            echo "host    all    all    127.0.0.1/32    trust"
            echo "host    all    all    ::1/128         trust"
            cat "$PG_HBA"
        } >"$tmp"
        as_root cp "$tmp" "$PG_HBA"
        rm -f "$tmp"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload ||
        die "could not reload postgres $PG_VERSION main"
    deadline=$((SECONDS + 10))
    until pg -tAc 'select 1' >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            pg -tAc 'select 1' >&2 || true
            die "postgres still refuses user postgres without a password on 127.0.0.1 (see $PG_HBA)"
        fi
        sleep 0.5
    done
    say "postgres: trust login over TCP works"
fi

# ---------------------------------------------------------------------------------------------
# 6. Databases.
# ---------------------------------------------------------------------------------------------
for db in test quizworker; do
    if [[ $(pg -tAc "select 1 from pg_database where datname = '$db'") == 1 ]]; then
        say "database $db: exists"
    else
        say "database $db: creating"
        # Another run may have created it meanwhile: check again before giving up.
        pg -c "create database \"$db\"" >/dev/null 2>&1 ||
            [[ $(pg -tAc "select 1 from pg_database where datname = '$db'") == 1 ]] ||
            die "could not create database $db"
    fi
done

# ---------------------------------------------------------------------------------------------
# 7. Test tools: the Python `redis` package.
# ---------------------------------------------------------------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-redis
fi
if python3 -c 'import redis' >/dev/null 2>&1; then
    say "python3 redis: installed"
else
    say "python3 redis: installing with pip"
    if ! python3 -m pip install --quiet --disable-pip-version-check redis >/dev/null 2>&1; then
        # Debian's own python3 refuses pip installs (PEP 668) and may lack pip: use its package.
        if [[ $(command -v python3) == /usr/bin/python3 ]]; then
            apt_install python3-redis
        else
            python3 -m pip install --quiet --disable-pip-version-check redis ||
                die "pip could not install the Python package redis"
        fi
    fi
    python3 -c 'import redis' >/dev/null 2>&1 || die "python3 still cannot import redis"
    say "python3 redis: installed"
fi

# ---------------------------------------------------------------------------------------------
# 8. Web tier tests: the Standard Webhooks reference library (tests/webhook_verify.py checks the
#    daemon's signatures with it) and the Node producer's packages (tests/producers, ioredis).
# ---------------------------------------------------------------------------------------------
if python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
    say "python3 standardwebhooks: installed"
else
    say "python3 standardwebhooks: installing with pip"
    python3 -m pip install --quiet --disable-pip-version-check 'standardwebhooks==1.1.0' ||
        die "pip could not install standardwebhooks (tests/webhooks.rs needs it)"
fi
if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
producers="$(dirname "${BASH_SOURCE[0]}")/../tests/producers"
if [[ -d $producers/node_modules/ioredis ]]; then
    say "node producer packages: installed"
else
    say "node producer packages: npm ci"
    (cd "$producers" && npm ci --no-audit --no-fund --silent) ||
        die "npm ci in tests/producers failed"
fi

say "all services up"
