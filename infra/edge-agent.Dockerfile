# syntax=docker/dockerfile:1.7
#
# The edge agent (services/edge-agent) for a Raspberry Pi (linux/arm64, 64-bit Raspberry Pi OS)
# and for amd64 gateways-in-a-box:
#
#   docker buildx build --platform linux/arm64 -f infra/edge-agent.Dockerfile -t lakehouse-edge:0.1.0 .
#   docker buildx build --platform linux/arm64,linux/amd64 -f infra/edge-agent.Dockerfile \
#     -t ghcr.io/lakehouse-platform/lakehouse-edge:0.1.0 --push .
#
# Python 3.11: what Raspberry Pi OS (Bookworm) ships, and what the agent's lock was resolved for.
# Its one dependency (cryptography, with cffi) comes from services/edge-agent/requirements.lock
# with hashes: wheels exist for both platforms, so nothing is compiled. (32-bit armv7 has no
# cryptography wheel: it would need Rust to build; use a 64-bit OS.) tests/test_images.py checks it.

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM python:3.11.14-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /src
COPY services/edge-agent/requirements.lock ./requirements.lock
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/lakehouse-edge/venv \
 && uv pip sync --require-hashes --python /opt/lakehouse-edge/venv/bin/python requirements.lock
COPY infra/build-constraints.lock ./
COPY services/edge-agent/ ./edge-agent/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv build --wheel --out-dir /wheels --build-constraints build-constraints.lock --require-hashes edge-agent \
 && uv pip install --no-deps --python /opt/lakehouse-edge/venv/bin/python /wheels/*.whl \
 && uv pip check --python /opt/lakehouse-edge/venv/bin/python

FROM python:3.11.14-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lakehouse-edge" \
      org.opencontainers.image.description="Edge agent: sensor readings to the lakehouse, encrypted on disk and in transit, exactly once" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/lakehouse-platform/lakehouse" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="lakehouse-platform" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
RUN groupadd --system --gid 10001 lakehouse-edge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/lakehouse-edge \
        --shell /usr/sbin/nologin lakehouse-edge \
 && rm -rf /usr/local/bin/pip* /usr/local/lib/python3.11/site-packages/pip \
        /usr/local/lib/python3.11/site-packages/pip-*.dist-info \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/lakehouse-edge
COPY --from=builder /opt/lakehouse-edge/venv /opt/lakehouse-edge/venv
# keys, identity and the encrypted queue live in the state directory: mount a volume there (the
# queue must outlive the container); the root filesystem can be read-only
ENV PATH="/opt/lakehouse-edge/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/lakehouse-edge/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/lakehouse-edge \
    HOME=/tmp \
    TMPDIR=/tmp
VOLUME ["/var/lib/lakehouse-edge"]
WORKDIR /var/lib/lakehouse-edge
USER 10001:10001
ENTRYPOINT ["lakehouse-edge"]
CMD ["--help"]
