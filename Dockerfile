# syntax=docker/dockerfile:1
# One image for both credward components:
#   operator:          credward operator run
#   security service:  credward security serve

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/credward
# Dependencies first, so source edits do not invalidate this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p operator/credward && touch operator/credward/__init__.py \
    && /opt/credward/bin/pip install . \
    && /opt/credward/bin/pip uninstall -y credward
COPY operator/ operator/
RUN /opt/credward/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="credward" \
      org.opencontainers.image.description="Service-account identities for automation clients on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/credward /opt/credward
ENV PATH=/opt/credward/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, non-root: satisfies runAsNonRoot without an /etc/passwd lookup.
USER 65532:65532
ENTRYPOINT ["credward"]
CMD ["operator", "run"]
