#!/usr/bin/env bash
# What the JupyterLab extension costs CI, cold: a fresh single-user venv (.venv-jlab's
# requirements), `npm ci` with an empty npm cache, `npm test`, the wheel build and install —
# the steps of `make jupyterlab`, in a scratch copy of the committed sources.
#   bash benchmarks/jupyterlab_build.sh [SCRATCH_DIR]     (default: a new /tmp directory)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/jlab-build-XXXXXX)}
git archive HEAD jupyterlab-extension tests/requirements-jlab.txt | tar -x -C "$work"
cd "$work"
t0=$(date +%s)
python3 -m venv .venv-jlab
.venv-jlab/bin/pip install -q --upgrade pip
.venv-jlab/bin/pip install -q -r tests/requirements-jlab.txt
t1=$(date +%s); echo "single-user venv (pip): $((t1 - t0)) s"
(cd jupyterlab-extension && npm ci --no-audit --no-fund --cache "$work/npm-cache" >/dev/null)
t2=$(date +%s); echo "npm ci, empty cache: $((t2 - t1)) s"
(cd jupyterlab-extension && npm test >/dev/null)
t3=$(date +%s); echo "npm test: $((t3 - t2)) s"
PATH="$work/.venv-jlab/bin:$PATH" .venv-jlab/bin/pip wheel -q --no-build-isolation --no-deps \
  -w jupyterlab-extension/dist ./jupyterlab-extension
.venv-jlab/bin/pip install -q --no-deps jupyterlab-extension/dist/*.whl
t4=$(date +%s); echo "wheel build (tsc + jupyter-builder) + install: $((t4 - t3)) s"
echo "total: $((t4 - t0)) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sizes: node_modules $(du -sm jupyterlab-extension/node_modules | cut -f1) MB," \
  "npm cache $(du -sm npm-cache | cut -f1) MB, wheel $(du -k jupyterlab-extension/dist/*.whl | cut -f1) kB"
