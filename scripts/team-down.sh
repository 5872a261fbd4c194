#!/usr/bin/env bash
# Stop what scripts/team-up.sh started: the mlflow server, then the PostgreSQL cluster.
#   bash scripts/team-down.sh            # keep data (runs, studies, artifacts) for next time
#   bash scripts/team-down.sh --purge    # also delete the cluster, artifacts and password
# Same settings as team-up.sh (AUGFORGE_TEAM_DIR, TEAM_PGDATA, AUGFORGE_PG_BINDIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${AUGFORGE_TEAM_DIR:-$ROOT/.team}"
BIN="${AUGFORGE_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
PURGE=0; [ "${1:-}" = "--purge" ] && PURGE=1
log() { printf '[team-down] %s\n' "$*" >&2; }

[ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; exit 0; }
AS_PG=(); [ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
PGDATA="${TEAM_PGDATA:-$STATE/pgdata}"
[ -n "${TEAM_PGDATA:-}" ] || [ ! -s "$STATE/pgdata.path" ] || PGDATA="$(cat "$STATE/pgdata.path")"

if [ -s "$STATE/mlflow.pid" ]; then
  pid="$(cat "$STATE/mlflow.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping mlflow server (process group $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$STATE/mlflow.pid"
fi

if [ -s "$PGDATA/PG_VERSION" ]; then
  if "${AS_PG[@]}" "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "stopping PostgreSQL ($PGDATA)"
    "${AS_PG[@]}" "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  if [ "$PURGE" -eq 1 ]; then rm -rf "$PGDATA"; fi
fi
if [ "$PURGE" -eq 1 ]; then
  log "purging $STATE"
  rm -rf "$STATE"
fi
log "done"
