# syntax=docker/dockerfile:1
# segstream: build a virtualenv in a builder stage, copy only the venv into a slim runtime.
#
#   docker build -t segstream .
#   docker run --rm --read-only --tmpfs /tmp -e SEGSTREAM_SEGMENTS__SIGNING_KEY=... segstream
#
# Pin the base by digest in CI for reproducible builds (python:3.11-slim@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Compilers only here, for any dependency that has no wheel for the target platform; the runtime
# stage never sees them. Unpinned: the builder takes the distribution's current toolchain.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY features/ features/
COPY segments/ segments/
COPY stream/ stream/
# A regular (non-editable) install: the venv holds the code, /src is not needed at run time.
# pip byte-compiles what it installs, so nothing needs writing next to the code at run time.
# The cache mount keeps downloaded wheels across builds without putting them in a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
    && segstream --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="segstream" \
      org.opencontainers.image.description="Real-time user segmentation: Kafka events -> Redis features -> segments -> Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: nothing is written next to the code (read-only root filesystem).
# MPLCONFIGDIR and HOME point into /tmp, which must be a writable tmpfs / emptyDir.
ENV PATH="/opt/venv/bin:$PATH" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp

# Relative outputs of the tools (generate, demo, evaluate) land on the writable /tmp.
WORKDIR /tmp

# Numeric so that Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 10001:10001

# /metrics, /healthz (liveness), /readyz (readiness).
EXPOSE 9400

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["segstream", "check"]

# SIGTERM: the loop finishes its batch, commits offsets and exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["segstream"]
CMD ["run"]
