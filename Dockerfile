# The operator image: `djangoscale run`, nothing else (the launcher `djangoscale serve` runs in
# the user's Django image). Build from the repository root: docker build -t djangoscale .
#
# Pinned to a patch release of the base. For a bit-for-bit reproducible build, pin the digest
# too: --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest of that tag>.
# Any Debian bookworm with python3 and its venv module will do: without a registry,
# `djangoscale cluster build-images` builds this file on a local Debian base.
# Builder and runtime must share the base: the venv points at the base's python3.11.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder
WORKDIR /src
# Only what the wheel needs; crds/ because operator/djangoscale/data/crd.yaml links into it.
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY operator/ operator/
COPY docker/install.sh docker/install.sh
RUN sh docker/install.sh /opt/venv /src

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="djangoscale" \
      org.opencontainers.image.description="Kubernetes operator that runs and autoscales Django apps" \
      org.opencontainers.image.source="https://github.com/djangoscale/djangoscale" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
# No bytecode writes at run time: the chart mounts the root filesystem read-only, with /tmp
# the one writable place (an emptyDir), so HOME points there for any library that caches.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric user, so the kubelet can check runAsNonRoot without an /etc/passwd entry.
USER 10001:10001
EXPOSE 8080 8081 6443
ENTRYPOINT ["djangoscale", "run"]
