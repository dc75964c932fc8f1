# minitemporal: one image for every role; the command chooses the roles.
#
#   docker build -t minitemporal .
#   docker run --init -p 127.0.0.1:8080:8080 -e MINITEMPORAL_API_HOST=0.0.0.0 \
#       -e MINITEMPORAL_INSECURE_NO_AUTH=true minitemporal    # local try-out only: see SECURITY.md
#
# Nothing secret is baked in: database URLs, the gRPC secret and api tokens come from the
# environment at run time (see docker-compose.yml and README.md, "Deploying"). Containers
# should run with an init as PID 1 (`docker run --init`, compose `init: true`): the worker
# runs each command in its own process group, and whatever those commands leave behind is
# reparented to PID 1, which must reap it.

# --- builder: the package and every dependency as wheels --------------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the build needs: README.md is the package's long description, and
# minitemporal/store/postgres/schema.sql is a symlink to the top-level schema.sql.
COPY pyproject.toml setup.cfg README.md schema.sql ./
COPY minitemporal ./minitemporal
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed, no compilers, no build tools, not root ---------------
FROM python:3.11.11-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Wheels come in through a bind mount, so they never become a layer of this image; the
# packaging tools the base image ships are removed once the wheels are in.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels minitemporal \
    && pip uninstall --yes setuptools wheel \
    && groupadd --system --gid 10001 minitemporal \
    && useradd --system --uid 10001 --gid 10001 --no-log-init \
        --home-dir /var/lib/minitemporal --create-home --shell /usr/sbin/nologin minitemporal

COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/minitemporal-healthcheck

# Embedded mode (no database URL) keeps its SQLite file in the working directory.
WORKDIR /var/lib/minitemporal
USER 10001:10001

# api, metrics (/healthz and /metrics of a process without the api), scheduler gRPC
EXPOSE 8080 8081 50051

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["minitemporal-healthcheck"]

# SIGTERM drains (worker: running commands get MINITEMPORAL_DRAIN_SECONDS to finish).
STOPSIGNAL SIGTERM
ENTRYPOINT ["minitemporal"]
CMD ["--roles", "all"]
