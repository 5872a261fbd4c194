#!/bin/sh
# Run once by the postgres image on an empty volume. POSTGRES_DB (created by the image
# itself) is MLflow's backend store; this adds OPTUNA_DB, Optuna's RDB storage for sweeps.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
SELECT 'CREATE DATABASE "${OPTUNA_DB:-optuna}"'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${OPTUNA_DB:-optuna}')\gexec
SQL
