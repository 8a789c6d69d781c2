#!/usr/bin/env bash
# Size of the quota-ledger image: everything (the chart's one image) and one per role
# (EXTRAS build argument; the chart's `<component>.image`), next to the base it is built on.
#   bash benchmarks/image_size.sh [PYTHON_IMAGE] [--no-cache]   (default: python:3.11-slim-bookworm)
# --no-cache: every build from nothing, as on a fresh CI machine (pip downloads included).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-python:3.11-slim-bookworm}
shift || true
mb() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.1f", $1/1e6}'; }
echo "base $base: $(mb "$base") MB"
for extras in collector,web,enforcer,cli,import collector web enforcer; do
  tag="quota-ledger:size-${extras//,/-}"
  start=$(date +%s)
  docker build -q "$@" --network host --build-arg PYTHON_IMAGE="$base" --build-arg EXTRAS="$extras" \
    -t "$tag" . >/dev/null
  echo "EXTRAS=$extras: $(mb "$tag") MB (+$(awk "BEGIN{print $(mb "$tag")-$(mb "$base")}") MB over the base), built in $(( $(date +%s) - start )) s"
done
