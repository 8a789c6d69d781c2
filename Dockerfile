# quota-ledger container image: collector, enforcer, web service and migrations
# (`quota-ledger collect|enforce|serve|migrate ...`), as charts/quota-ledger runs them.
#
#   make image                       # = docker build -t quota-ledger:dev .
#   docker build --build-arg PYTHON_IMAGE=local/python:3.11-slim-bookworm -t quota-ledger:dev .
#   docker build --build-arg EXTRAS=collector -t quota-ledger:dev-collector .   # one role
#
# Builds with the classic builder as well as BuildKit (no RUN --mount, no syntax directive).
# 1. builder: installs the project with the role extras into a virtualenv and slims it
#    (image/slim_venv.py: no type stubs, test suites, unused Kubernetes API groups, debug
#    symbols, or byte-code of modules no command imports).
# 2. runtime: the Python base less its installer, docs and translations (image/slim_base.sh),
#    the unprivileged user, and the virtualenv.
# 3. final: that file system copied into one layer, so what stage 2 deleted really leaves the
#    image (deleting in a layer above the base's would only hide it). No compiler, pip,
#    source tree or build cache reaches the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Every role the chart runs, and `import` (orjson, ~0.4 MB: `quota-ledger import` of a
# backfill decodes JSON Lines ~3x faster, docs/scaling.md); `embedded` (a bundled PostgreSQL
# server) stays out of the image.
ARG EXTRAS=collector,web,enforcer,cli,import
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# binutils: `strip`, for the compiled extensions' debug symbols.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ledger ./ledger
COPY collector ./collector
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-compile ".[${EXTRAS}]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel
COPY image/slim_venv.py ./image/
RUN /opt/venv/bin/python image/slim_venv.py /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
COPY image/slim_base.sh /tmp/slim_base.sh
RUN sh /tmp/slim_base.sh \
 && groupadd --system --gid 10001 quota \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin quota
COPY --from=builder /opt/venv /opt/venv

FROM scratch
COPY --from=runtime / /
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="quota-ledger" \
      org.opencontainers.image.description="Compute-usage quotas for JupyterHub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
# FROM scratch keeps none of the base's environment: PATH and LANG as the Python image sets
# them, the virtualenv first.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QUOTA_LEDGER_CONFIG=/etc/quota-ledger/policy.yaml
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080
ENTRYPOINT ["quota-ledger"]
CMD ["--help"]
