# The portal image: one image for web (the default command), worker and beat.
#
#   docker build -t dockyard/portal .                                   # official Python base
#   docker build --build-arg BASE=dockyard/base:bookworm -t dockyard/portal .  # no registry:
#                                                  # the base scripts/build-base-image.sh makes
#
# Networks that inspect TLS: pip trusts a CA bundle placed in the build context as
# var/build-ca.crt (e.g. cp /etc/ssl/certs/ca-certificates.crt var/build-ca.crt). It is used in
# the build stage only and never reaches the final image. A package index other than PyPI:
# --build-arg PIP_INDEX_URL=https://...
#
# The same commands as the Procfile (see docs/operations.md, "Deploying on one host"):
#   web     the default CMD (uvicorn; UVICORN_HOST / UVICORN_PORT, default 0.0.0.0:8000)
#   worker  celery -A portal worker -Q default,runtime,builds --loglevel INFO -n worker@%h
#   beat    celery -A portal beat --loglevel INFO --schedule /var/lib/dockyard/celerybeat-schedule
#   migrate python manage.py migrate --noinput

# Any image with python3 (3.11 or newer) on Debian: the official slim image by default.
ARG BASE=python:3.11-slim-bookworm

# --- build: a virtual environment with the pinned requirements --------------------------------
# The base runs as root (both defaults do). Every stage opens with an instruction of its own: the
# classic builder reuses a cached layer by parent and instruction, and catalog builds on the
# same base start with other instructions, so they never take this build's cache away.
FROM ${BASE} AS build
ARG PIP_INDEX_URL
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The official image ships venv and ensurepip; a bare Debian python3 may lack them.
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/venv
# Requirements before code, so a code change reuses this layer. `build-ca.cr[t]` matches the
# optional CA bundle, or nothing (then only requirements.txt is copied).
COPY requirements.txt var/build-ca.cr[t] /tmp/build/
RUN if [ -f /tmp/build/build-ca.crt ]; then export PIP_CERT=/tmp/build/build-ca.crt; fi \
 && /opt/venv/bin/pip install -r /tmp/build/requirements.txt

# --- the portal ---------------------------------------------------------------------------------
FROM ${BASE}
LABEL org.opencontainers.image.title="Dockyard portal" \
      org.opencontainers.image.description="Dockyard's web, worker and beat processes"
# A fixed uid/gid, so Kubernetes' runAsUser and volume ownership can name it.
RUN groupadd --system --gid 10001 dockyard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/dockyard --no-create-home \
      --shell /usr/sbin/nologin dockyard \
 && mkdir -p /var/lib/dockyard && chown dockyard:dockyard /var/lib/dockyard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_DEBUG=0 \
    DOCKYARD_VAR_DIR=/var/lib/dockyard \
    STATIC_ROOT=/app/staticfiles \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000
WORKDIR /app
# Code is owned by root: the portal's user can read it, not change it. Named one by one so the
# build context's var/ (the optional CA bundle) stays out.
COPY manage.py ./
COPY static static
COPY templates templates
COPY portal portal
COPY workspaces workspaces
COPY jobs jobs
# Static files are collected (hashed and compressed for whitenoise) at build time; settings
# need a secret key to load, never used for anything here.
RUN DOCKYARD_VAR_DIR=/tmp/collectstatic SECRET_KEY=collectstatic-only DOCKYARD_AUDIT_KEY=collectstatic-only \
      python manage.py collectstatic --noinput -v0 \
 && python -m compileall -q -j 0 manage.py portal workspaces jobs >/dev/null \
 && rm -rf /tmp/collectstatic
USER 10001:10001
EXPOSE 8000
# X-Forwarded-For/-Proto are believed only from these addresses (uvicorn reads the variable):
# the reverse proxy in front, never `*`, or a client could choose the address the audit log records.
ENV FORWARDED_ALLOW_IPS=127.0.0.1,::1
CMD ["uvicorn", "portal.asgi:application", "--proxy-headers", "--no-server-header"]
