# syntax=docker/dockerfile:1
#
# quota-ledger container image: collector, enforcer, web service and migrations
# (`quota-ledger collect|enforce|serve|migrate ...`). Used by charts/quota-ledger.
#
#   docker build -t ghcr.io/quota-ledger/quota-ledger:0.1.0 .
#
# Stage 1 builds the project's wheel and the wheels of all its dependencies;
# stage 2 installs them offline into a clean python:3.11-slim and runs as an
# unprivileged user. No compiler, build tool or source tree reaches the final
# image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ledger ./ledger
COPY collector ./collector
COPY migrations ./migrations
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="quota-ledger" \
      org.opencontainers.image.description="Compute-usage quotas for JupyterHub on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUOTA_LEDGER_CONFIG=/etc/quota-ledger/policy.yaml
# Install only from the wheels built above (no index, no compilation), then
# drop pip's build helpers; the wheels never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels quota-ledger \
 && pip uninstall --yes setuptools wheel \
 && groupadd --system --gid 10001 quota \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin quota
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080
ENTRYPOINT ["quota-ledger"]
CMD ["--help"]
