# syntax=docker/dockerfile:1
# bolina-scaler container image.
#
#   docker build -t bolina-scaler:dev .
#
# Two stages on the same pinned slim Python: `build` makes the wheel and installs it with its
# dependencies into /opt/venv; the final stage copies only that virtualenv (no compiler, no
# build frontend, no source tree) and runs as an unprivileged numeric user. Pin the base by
# digest as well (FROM python:...@sha256:...) where your registry policy asks for it.
# CI cannot run a Docker engine: it lints this file with hadolint and runs the same entry
# command from a clean virtualenv built from the wheel (tests/test_image.py).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bolina_scaler ./bolina_scaler
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/bolina-scaler --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="bolina-scaler" \
      org.opencontainers.image.description="Scales the bolina Deployment from the health of the bolina Consul service" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 bolina \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bolina
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["bolina-scaler"]
CMD ["run", "--config", "/etc/bolina-scaler/config.yaml"]
