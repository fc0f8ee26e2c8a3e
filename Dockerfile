# syntax=docker/dockerfile:1
# One image for both credward components (the chart picks the command):
#   operator:          credward operator run
#   security service:  credward security serve
# Every Python package comes from requirements*.lock (exact versions, hashes checked), the set CI tests.
# Pin the base image by digest for fully repeatable builds: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The installer and the build backend live in their own venv, which the final stage never sees.
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
# Dependency layer: only the lock, so source edits do not invalidate it. The runtime venv has no pip.
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/credward \
    && /opt/build/bin/pip --python /opt/credward/bin/python install --require-hashes --no-deps -r requirements.lock
# The source: credward itself, built with the locked backend and installed without resolving anything.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/build/bin/pip --python /opt/credward/bin/python install --no-deps /dist/credward-*.whl \
    && /opt/build/bin/pip --python /opt/credward/bin/python check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="credward" \
      org.opencontainers.image.description="Service-account identities for automation clients on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own installer and build backend are not needed at run time.
RUN python -m pip uninstall --yes --quiet --root-user-action=ignore pip setuptools wheel \
    && rm -rf /root/.cache
COPY --from=build /opt/credward /opt/credward
ENV PATH=/opt/credward/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The security service's default port; the operator's ports (--liveness-port, --webhook-port) are set by flags.
EXPOSE 9000
# Numeric, non-root: satisfies runAsNonRoot without an /etc/passwd lookup.
USER 65532:65532
ENTRYPOINT ["credward"]
CMD ["operator", "run"]
