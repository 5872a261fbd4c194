#!/usr/bin/env bash
# The one command for a borrowed GPU (docs/scaling.md, "GPU"): environment, throughput, a `modern` run at
# 64 px, its ONNX generator, resume and DDP checks, a sweep when optuna+mlflow are there.
#   scripts/device-check.sh OUT_DIR [--cpu --tiny] [--data DIR] [--budget-s 450] [--only a,b]
# Runs from the repository root without `pip install` (PYTHONPATH=.:plugins; the plugin
# manager then registers augforge_plugins itself). Wheels carried in .device-wheels/
# (`make device-wheels`) are installed into .device-site/ first, offline.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [--cpu --tiny] [--data DIR] [--budget-s SECONDS] [--only STAGES]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
site=""
if [ -d .device-wheels ] && ls .device-wheels/*.whl >/dev/null 2>&1; then
    # --no-deps: the folder holds exactly what the machine lacks (make device-wheels)
    "$PY" -m pip install -q --no-index --no-deps --target .device-site .device-wheels/*.whl \
        && site=":.device-site" || echo "device-check: installing .device-wheels failed; going on without" >&2
fi
export PYTHONPATH=".:plugins${site}${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m augforge.device.check "$@"
