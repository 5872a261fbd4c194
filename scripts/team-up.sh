#!/usr/bin/env bash
# Team mode without docker: a local PostgreSQL 15 cluster (MLflow backend store + Optuna
# storage) and an `mlflow server` that serves artifacts (--serve-artifacts), then prints the
# MLFLOW_TRACKING_URI and the --storage URL to use. Idempotent: running it again only prints.
#
#   bash scripts/team-up.sh             # or: make team-up
#   source .team/team.env               # MLFLOW_TRACKING_URI, OPTUNA_STORAGE
#   augforge train --preset smoke
#   augforge sweep ... --storage "$OPTUNA_STORAGE" --study my-sweep
#   bash scripts/team-down.sh [--purge] # or: make team-down
#
# Settings (environment):
#   AUGFORGE_TEAM_DIR  state folder (default .team/: password, logs, artifacts, pids)
#   TEAM_HOST          address both servers listen on (default 127.0.0.1; a lab server that
#                      other machines use: TEAM_HOST=0.0.0.0, and firewall it to your network)
#   TEAM_PUBLIC_HOST   host name printed in the URLs (default: 127.0.0.1, or `hostname -f`
#                      when TEAM_HOST=0.0.0.0)
#   TEAM_PG_PORT       PostgreSQL port (default 5433, not to clash with a system cluster)
#   TEAM_MLFLOW_PORT   MLflow port (default 5000)
#   TEAM_PGDATA        data folder of the cluster (default $AUGFORGE_TEAM_DIR/pgdata)
#   AUGFORGE_PG_BINDIR PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$(mkdir -p "${AUGFORGE_TEAM_DIR:-$ROOT/.team}" && cd "${AUGFORGE_TEAM_DIR:-$ROOT/.team}" && pwd)"
HOST="${TEAM_HOST:-127.0.0.1}"
if [ -n "${TEAM_PUBLIC_HOST:-}" ]; then PUBLIC="$TEAM_PUBLIC_HOST"
elif [ "$HOST" = "0.0.0.0" ]; then PUBLIC="$(hostname -f 2>/dev/null || hostname)"
else PUBLIC="$HOST"; fi
PG_PORT="${TEAM_PG_PORT:-5433}"
MLFLOW_PORT="${TEAM_MLFLOW_PORT:-5000}"
PG_USER=augforge
BIN="${AUGFORGE_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
MLFLOW="${MLFLOW_BIN:-}"
[ -n "$MLFLOW" ] || { [ -x "$ROOT/.venv/bin/mlflow" ] && MLFLOW="$ROOT/.venv/bin/mlflow"; } || MLFLOW="$(command -v mlflow || true)"
PY="$(dirname "$MLFLOW")/python"; [ -x "$PY" ] || PY=python3

log() { printf '[team-up] %s\n' "$*" >&2; }
die() { printf '[team-up] error: %s\n' "$*" >&2; exit 1; }

[ -n "$MLFLOW" ] && [ -x "$MLFLOW" ] || die "mlflow not found: run \`make install\` (or set MLFLOW_BIN)"
if [ ! -x "$BIN/initdb" ]; then
  log "PostgreSQL 15 missing: installing Debian's postgresql-15 (scripts/system-deps.sh)"
  bash "$ROOT/scripts/system-deps.sh"
  [ -x "$BIN/initdb" ] || die "no $BIN/initdb (set AUGFORGE_PG_BINDIR)"
fi

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user.
AS_PG=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
  AS_PG=(runuser -u postgres --)
fi
PGDATA="${TEAM_PGDATA:-$STATE/pgdata}"
if [ ${#AS_PG[@]} -gt 0 ] && [ -z "${TEAM_PGDATA:-}" ] && ! "${AS_PG[@]}" test -x "$STATE" 2>/dev/null; then
  # The postgres user cannot reach $STATE: keep the cluster in its home, one per state folder.
  PGDATA="/var/lib/postgresql/augforge-team-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
fi
echo "$PGDATA" > "$STATE/pgdata.path"   # for team-down.sh

# One password, generated once, kept out of git (.team/ is ignored) and readable by you only.
umask 077
[ -s "$STATE/pg-password" ] || "$PY" -c 'import secrets; print(secrets.token_hex(16))' > "$STATE/pg-password"
PASS="$(cat "$STATE/pg-password")"
umask 022

pg() { "${AS_PG[@]}" "$BIN/$1" "${@:2}"; }

# --- PostgreSQL -------------------------------------------------------------------------
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "initdb $PGDATA"
  mkdir -p "$PGDATA"
  PWFILE="$(mktemp)"; printf '%s\n' "$PASS" > "$PWFILE"
  if [ ${#AS_PG[@]} -gt 0 ]; then chown postgres:postgres "$PGDATA" "$PWFILE"; fi
  chmod 700 "$PGDATA"
  pg initdb -D "$PGDATA" -U "$PG_USER" --pwfile "$PWFILE" -E UTF8 --locale=C \
     --auth-host=scram-sha-256 --auth-local=scram-sha-256 >/dev/null
  rm -f "$PWFILE"
  {
    echo "# augforge team mode"
    echo "listen_addresses = '$HOST'"
    echo "port = $PG_PORT"
    echo "unix_socket_directories = ''"
    echo "max_connections = 300"
  } | "${AS_PG[@]}" tee -a "$PGDATA/postgresql.conf" >/dev/null
  if [ "$HOST" != "127.0.0.1" ]; then
    # Password (SCRAM) logins from other machines; restrict the range to your lab network.
    echo "host all all 0.0.0.0/0 scram-sha-256" | "${AS_PG[@]}" tee -a "$PGDATA/pg_hba.conf" >/dev/null
  fi
fi
if pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then
  log "PostgreSQL already running ($PGDATA)"
else
  log "starting PostgreSQL on $HOST:$PG_PORT"
  pg pg_ctl -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t 60 start >/dev/null \
    || { tail -20 "$PGDATA/postgres.log" >&2 || true; die "PostgreSQL did not start"; }
fi
ADMIN_URL="postgresql://$PG_USER:$PASS@127.0.0.1:$PG_PORT/postgres"
[ "$HOST" = "0.0.0.0" ] || [ "$HOST" = "127.0.0.1" ] || ADMIN_URL="postgresql://$PG_USER:$PASS@$HOST:$PG_PORT/postgres"
"$PY" - "$ADMIN_URL" <<'PYEOF'
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1], connect_timeout=10)
conn.autocommit = True
with conn.cursor() as cur:
    for db in ("mlflow", "optuna"):
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{db}"')
conn.close()
PYEOF
DB_HOST="$HOST"; [ "$HOST" = "0.0.0.0" ] && DB_HOST=127.0.0.1
MLFLOW_DB_URL="postgresql://$PG_USER:$PASS@$DB_HOST:$PG_PORT/mlflow"
STORAGE="postgresql://$PG_USER:$PASS@$PUBLIC:$PG_PORT/optuna"

# --- MLflow tracking server ---------------------------------------------------------------
TRACKING="http://$PUBLIC:$MLFLOW_PORT"
health() { "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=3)" "http://127.0.0.1:$MLFLOW_PORT" 2>/dev/null \
        || "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=3)" "http://$DB_HOST:$MLFLOW_PORT" 2>/dev/null; }
if [ -s "$STATE/mlflow.pid" ] && kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
  log "mlflow server already running (pid $(cat "$STATE/mlflow.pid"))"
else
  mkdir -p "$STATE/mlartifacts"
  ALLOWED="${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*,$PUBLIC,$PUBLIC:*}"
  log "starting mlflow server on $HOST:$MLFLOW_PORT (artifacts: $STATE/mlartifacts)"
  # setsid: its own process group, so team-down stops the server and its workers together.
  setsid "$MLFLOW" server \
      --backend-store-uri "$MLFLOW_DB_URL" \
      --serve-artifacts --artifacts-destination "$STATE/mlartifacts" \
      --host "$HOST" --port "$MLFLOW_PORT" --workers "${TEAM_MLFLOW_WORKERS:-2}" \
      --allowed-hosts "$ALLOWED" \
      >"$STATE/mlflow.log" 2>&1 < /dev/null &
  echo $! > "$STATE/mlflow.pid"
fi
for _ in $(seq 1 180); do
  health && break
  kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null || { tail -30 "$STATE/mlflow.log" >&2; die "mlflow server exited"; }
  sleep 1
done
health || { tail -30 "$STATE/mlflow.log" >&2; die "mlflow server not healthy after 180 s"; }

umask 077
cat > "$STATE/team.env" <<EOF
# written by scripts/team-up.sh — contains the database password; do not commit
export MLFLOW_TRACKING_URI=$TRACKING
export OPTUNA_STORAGE=$STORAGE
EOF
cat <<EOF

augforge team mode is up.
  MLflow UI / tracking : $TRACKING
  Optuna storage       : $STORAGE
  PostgreSQL data      : $PGDATA   (port $PG_PORT)
  MLflow artifacts     : $STATE/mlartifacts   (uploaded through the server)

Point augforge at it (every machine, every worker):
  export MLFLOW_TRACKING_URI=$TRACKING
  augforge train --preset smoke
  augforge sweep --dataset synthetic-lesions --model sngan --trials 16 --objective kid \\
      --storage '$STORAGE' --study team-sweep
or simply:  source $STATE/team.env
Dashboard:  optuna-dashboard '$STORAGE'      Stop: bash scripts/team-down.sh
EOF
