#!/usr/bin/env bash
# Start a real Docker engine on this machine (Debian docker.io; no systemd here) and make a
# local stand-in for the official python:3.11-slim-bookworm image, which cannot be pulled here
# (no container registry is reachable). Idempotent; prints the image tag last.
#
#   bash .ci/docker-up.sh                        # -> local/python:3.11-slim-bookworm
#   docker build --network host --build-arg PYTHON_IMAGE=local/python:3.11-slim-bookworm .
#
# The stand-in: Debian bookworm (debootstrap from the Debian mirror) with python3.11, and a
# venv rooted at /usr/local so that `python` and `pip` are on PATH as in the official image.
# The host's CA bundle is copied in so pip inside builds reaches the package index.
# Use --network host for builds and runs (no bridge traffic needed).
set -euo pipefail
TAG=${BASE_TAG:-local/python:3.11-slim-bookworm}
export DEBIAN_FRONTEND=noninteractive
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (dockerd >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/dockerd.log" >&2; exit 1; }
fi
if ! docker image inspect "$TAG" >/dev/null 2>&1; then
  root=$(mktemp -d /tmp/rootfs.XXXXXX)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >/tmp/debootstrap.log 2>&1 \
    || { echo "debootstrap failed; see /tmp/debootstrap.log" >&2; exit 1; }
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  chroot "$root" /usr/bin/python3 -m venv /usr/local
  chroot "$root" /usr/local/bin/pip install -q --upgrade pip setuptools wheel >/dev/null 2>&1 || true
  rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$TAG" >/dev/null
  rm -rf "$root"
fi
echo "$TAG"
