#!/bin/sh
# augforge container entry point.
#
#   docker run IMAGE train --preset smoke ...   -> augforge train --preset smoke ...
#   docker run IMAGE mlflow server ...          -> mlflow server ...   (also: optuna-dashboard,
#                                                  torchrun, python, sh, bash)
#
# Connection URLs are assembled here, at run time, from the env file's variables
# (POSTGRES_USER / POSTGRES_PASSWORD / ...), so no secret is ever baked into the image or
# written inline in compose.yaml. Variables already set are left alone.
set -eu

if [ -n "${POSTGRES_PASSWORD:-}" ]; then
  _pg="postgresql://${POSTGRES_USER:-augforge}:${POSTGRES_PASSWORD}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}"
  # MLflow server's backend store (runs, params, metrics, model registry).
  : "${MLFLOW_BACKEND_STORE_URI:=${_pg}/${POSTGRES_DB:-mlflow}}"
  # Optuna's RDB storage shared by every sweep worker (`augforge sweep --storage ...`).
  : "${OPTUNA_STORAGE:=${_pg}/${OPTUNA_DB:-optuna}}"
  export MLFLOW_BACKEND_STORE_URI OPTUNA_STORAGE
  unset _pg
fi

case "${1:-}" in
  "") set -- augforge --help ;;
  augforge|mlflow|optuna-dashboard|torchrun|python|python3|sh|bash) ;;
  *) set -- augforge "$@" ;;
esac
exec "$@"
