# quota-ledger container image: collector, enforcer, web service and migrations
# (`quota-ledger collect|enforce|serve|migrate ...`), as charts/quota-ledger runs them.
#
#   make image                       # = docker build -t quota-ledger:dev .
#   docker build --build-arg PYTHON_IMAGE=local/python:3.11-slim-bookworm -t quota-ledger:dev .
#
# Builds with the classic builder as well as BuildKit (no RUN --mount, no syntax directive):
# stage 1 installs the project with the role extras into a virtualenv, stage 2 copies only
# that virtualenv onto a clean base and runs as an unprivileged user. No compiler, pip, source
# tree or build cache reaches the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Every role the chart runs; `embedded` (a bundled PostgreSQL server) stays out of the image.
ARG EXTRAS=collector,web,enforcer,cli
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ledger ./ledger
COPY collector ./collector
COPY migrations ./migrations
RUN /opt/venv/bin/pip install ".[${EXTRAS}]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && find /opt/venv -name 'tests' -path '*/site-packages/*/tests' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="quota-ledger" \
      org.opencontainers.image.description="Compute-usage quotas for JupyterHub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    QUOTA_LEDGER_CONFIG=/etc/quota-ledger/policy.yaml
COPY --from=builder /opt/venv /opt/venv
RUN groupadd --system --gid 10001 quota \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin quota
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080
ENTRYPOINT ["quota-ledger"]
CMD ["--help"]
