# A stand-in for Zero-to-JupyterHub's k8s-hub image (no registry is reachable from CI): the
# Python base plus the hub image's frozen requirements, installed the way its own Dockerfile
# does (build tools for the two packages without wheels, psycopg2 and pycurl, then removed).
# `wheel` goes: the hub image does not pin it, and a newer one than its `packaging` allows
# would fail `pip check` before quota-ledger is even installed.
# The real k8s-hub 4.x image runs Python 3.12; the local base is Debian bookworm's 3.11, so
# this stand-in installs the same pins on 3.11 (every pinned version supports both).
# Build context: tests/constraints/. Used by tests/test_image.py.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The constraints file of the z2jh version under test (tests/constraints/).
ARG CONSTRAINTS=z2jh-hub-4.x.txt
COPY ${CONSTRAINTS} /tmp/hub-requirements.txt
# Python's headers: in /usr/local/include on the official image; Debian's python3-dev elsewhere.
RUN headers="$(python -c 'import os, sysconfig; print("" if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else "python3-dev")')" \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends gcc libc6-dev libpq-dev libcurl4-openssl-dev libssl-dev $headers >/dev/null \
 && apt-mark manual libpq5 libcurl4 >/dev/null \
 && pip install -r /tmp/hub-requirements.txt \
 && apt-get purge -y -qq gcc libc6-dev libpq-dev libcurl4-openssl-dev libssl-dev $headers >/dev/null \
 && apt-get autoremove -y -qq >/dev/null && rm -rf /var/lib/apt/lists/* \
 && (pip uninstall -y -q wheel 2>/dev/null || true) \
 && pip check \
 && useradd --uid 1000 --create-home jovyan
USER 1000
