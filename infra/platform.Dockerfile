# syntax=docker/dockerfile:1.7
#
# The platform image: the `lakehouse` CLI, the Kafka sink, the edge gateway, the dbt runner and
# table maintenance, with the reference project (contracts/, dbt/, policies/) and the Trino
# decrypt plugin that the chart's Trino init container copies out of it.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -f infra/platform.Dockerfile \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t ghcr.io/lakehouse-platform/lakehouse:0.1.0 .
#
# Every Python package comes from requirements.lock with its hashes (--require-hashes), the
# project and the in-repo edge agent as wheels without dependencies (--no-deps); the build's own
# tools from infra/build-constraints.lock, hashed too. tests/test_images.py checks this file.

# uv, the installer `make install` uses (same version)
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# --- the Python environment ----------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /src
# the pinned dependencies alone first: this layer is rebuilt only when the lock changes
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/lakehouse/venv \
 && uv pip sync --require-hashes --python /opt/lakehouse/venv/bin/python requirements.lock
# then the project and the edge agent (the gateway opens sealed batches with its envelope code;
# the lock leaves it out: it comes from this repository, never an index)
COPY pyproject.toml README.md ./
COPY infra/build-constraints.lock infra/
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv build --wheel --out-dir /wheels --build-constraints infra/build-constraints.lock --require-hashes . \
 && uv build --wheel --out-dir /wheels --build-constraints infra/build-constraints.lock --require-hashes services/edge-agent \
 && uv pip install --no-deps --python /opt/lakehouse/venv/bin/python /wheels/*.whl \
 && uv pip check --python /opt/lakehouse/venv/bin/python

# --- the Trino plugin (pii_decrypt), as `lakehouse stack install` builds it ----------------------
FROM maven:3.9.11-eclipse-temurin-24 AS trino-plugin
WORKDIR /build
COPY services/trino-pii/ ./
RUN --mount=type=cache,target=/root/.m2 \
    mvn -q -B -Dstyle.color=never package \
 && install -D -m 0644 target/trino-pii.jar /opt/lakehouse/trino-plugin/lakehouse-pii/trino-pii.jar

# --- the runtime ----------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lakehouse" \
      org.opencontainers.image.description="Security-hardened lakehouse platform: CLI, Kafka sink, edge gateway, dbt runner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/lakehouse-platform/lakehouse" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="lakehouse-platform" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
# The user the chart runs every pod as (global.securityContext.runAsUser), named so that tools
# asking for a user name find one. The base image's pip goes: nothing installs at run time.
RUN groupadd --system --gid 10001 lakehouse \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/lakehouse \
        --shell /usr/sbin/nologin lakehouse \
 && rm -rf /usr/local/bin/pip* /usr/local/lib/python3.11/site-packages/pip \
        /usr/local/lib/python3.11/site-packages/pip-*.dist-info \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/lakehouse
COPY --from=builder /opt/lakehouse/venv /opt/lakehouse/venv
COPY --from=trino-plugin /opt/lakehouse/trino-plugin/ /opt/lakehouse/trino-plugin/
# the project the CLI reads (LAKEHOUSE_PROJECT_DIR): owned by root, read-only to the service
COPY contracts/ /opt/lakehouse/project/contracts/
COPY dbt/ /opt/lakehouse/project/dbt/
COPY policies/ /opt/lakehouse/project/policies/
# Read-only root filesystem: everything written goes to LAKEHOUSE_HOME (the state volume; dbt's
# target/ and logs/ too) or /tmp (HOME, an emptyDir); bytecode was compiled at build time.
ENV PATH="/opt/lakehouse/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/lakehouse/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LAKEHOUSE_PROJECT_DIR=/opt/lakehouse/project \
    LAKEHOUSE_HOME=/var/lib/lakehouse \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /var/lib/lakehouse
# the sink's metrics (sink.metrics_port), the gateway's TLS port and its metrics port
EXPOSE 9400 8443 9401
USER 10001:10001
ENTRYPOINT ["lakehouse"]
CMD ["--help"]
