# One image for every role: `mc master`, `mc worker`, any other `mc` command, or a
# program of your own (examples/group_worker.py is included under /opt/mc/examples).
#
#   docker build -t mc:latest .                                    # on python:3.11-slim
#   podman build --build-arg BASE=localhost/mc-base:bookworm -t mc:latest .   # offline base
#
# The entrypoint (docker/entrypoint.py) turns MC_* environment variables into
# flags and, for a worker, works out the address it advertises (docs/deploying.md).
ARG BASE=python:3.11-slim

# ---- build: a venv under /opt with mc and its dependencies, nothing else
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/mc
# dependencies first (from pyproject.toml alone), so a code change reuses this layer
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/mc/bin/pip install -q -r /tmp/requirements.txt
COPY README.md /src/
COPY mc /src/mc
RUN /opt/mc/bin/pip install -q --no-deps /src \
 && /opt/mc/bin/pip uninstall -q -y pip setuptools
# (both scripts are executable in the repository; COPY keeps the mode)
COPY docker/entrypoint.py /opt/mc/bin/mc-entrypoint
COPY docker/healthcheck.py /opt/mc/bin/mc-healthcheck
COPY examples /opt/mc/examples

# ---- run: the same base, the venv copied in, a non-root user
FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mc
COPY --from=build /opt/mc /opt/mc
ENV PATH=/opt/mc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MC_HOST=0.0.0.0
USER 10001:10001
WORKDIR /opt/mc
# 7100: master (HTTP API, dashboard, /metrics, WebSocket entry); 7101: a worker
EXPOSE 7100 7101
# GET /healthz on this container's own port (MC_PORT, else 7100 then 7101)
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["mc-healthcheck"]
# A worker stops on SIGTERM by leaving the cluster and closing its clients with 4503
# (they reconnect through the master); give it time: `stop_grace_period` in compose,
# `--stop-timeout` with docker/podman run.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mc-entrypoint"]
CMD ["worker"]
