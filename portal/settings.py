"""Dockyard settings: the one place that reads the environment.

Every variable is listed in `.env.example` with what it does. Defaults are safe for
development; production sets DJANGO_DEBUG=0, SECRET_KEY, ALLOWED_HOSTS and, behind TLS,
DOCKYARD_HTTPS=1 (`manage.py check --deploy` is then clean).
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# Run-time files of the embedded default: SQLite database, filesystem broker, cache.
VAR_DIR = Path(env.str("DOCKYARD_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-change-me" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Applications -------------------------------------------------------------------------

INSTALLED_APPS = [
    "portal.accounts",
    "portal.audit",
    "portal.catalog",
    "portal.core",
    "portal.workloads",
    "workspaces",
    "portal.quotas",
    "portal.core.admin_config.DockyardAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.accounts.middleware.ActiveTeamMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.accounts.context_processors.teams",
            ],
        },
    },
]

# --- Data stores --------------------------------------------------------------------------

# With no DATABASE_URL the portal runs on SQLite (the embedded default for `make run`).
# WAL and IMMEDIATE transactions let web, worker and beat share the file without
# "database is locked" errors under light load.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'dockyard.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Celery -------------------------------------------------------------------------------

# With no REDIS_URL, Celery uses kombu's filesystem transport: a broker that needs no server,
# still driving a real worker and beat in their own processes.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or f"file://{VAR_DIR / 'celery-results'}")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem://")
    else {
        # A task not acknowledged within this time is handed to another worker; it must
        # outlast the longest task, or a slow task would run twice at once.
        "visibility_timeout": env.int("DOCKYARD_BROKER_VISIBILITY_TIMEOUT_S", default=7200),
    }
)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Builds run for minutes: their own queue, so they never hold up starts and stops.
CELERY_TASK_ROUTES = {"catalog.build_image": {"queue": "builds"}, "workspaces.*": {"queue": "runtime"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_TIMEZONE = "UTC"

# --- Runtime backend ----------------------------------------------------------------------

DOCKYARD_RUNTIME = env.str("DOCKYARD_RUNTIME", default="docker")
DOCKER_HOST = env.str("DOCKER_HOST", default="")
KUBECONFIG = env.str("KUBECONFIG", default="")
KUBE_CONTEXT = env.str("DOCKYARD_KUBE_CONTEXT", default="")
# The bridge network every Docker workload joins (traffic between workloads off), and the
# host-side name of its bridge, which scripts/workload-firewall.sh filters.
DOCKYARD_DOCKER_NETWORK = env.str("DOCKYARD_DOCKER_NETWORK", default="dockyard-workloads")
DOCKYARD_DOCKER_BRIDGE = env.str("DOCKYARD_DOCKER_BRIDGE", default="dy-workloads")
# Extra labels put on every workload container and volume ("key=value,key=value"), e.g. to
# tell apart what one installation or test run made on a shared engine.
DOCKYARD_WORKLOAD_LABELS = env.dict("DOCKYARD_WORKLOAD_LABELS", default={})

# --- Workspaces and the notebook proxy ---------------------------------------------------

# Each workspace is served on its own origin: <workspace-uuid>.<DOCKYARD_NOTEBOOK_DOMAIN>.
# Browsers resolve *.localhost to this machine, so the default needs no DNS in development.
DOCKYARD_NOTEBOOK_DOMAIN = env.str("DOCKYARD_NOTEBOOK_DOMAIN", default="nb.localhost")
# Scheme and port notebook URLs use (the portal's own port by default; empty for 80/443).
DOCKYARD_NOTEBOOK_SCHEME = env.str(
    "DOCKYARD_NOTEBOOK_SCHEME", default="https" if env.bool("DOCKYARD_HTTPS", default=False) else "http"
)
DOCKYARD_NOTEBOOK_PORT = env.str("DOCKYARD_NOTEBOOK_PORT", default=env.str("PORT", default="8000"))
# The portal's own address, where notebook hosts send people to sign in.
DOCKYARD_PORTAL_URL = env.str("DOCKYARD_PORTAL_URL", default=f"http://127.0.0.1:{env.str('PORT', default='8000')}")
# Port Jupyter listens on inside workspace containers.
DOCKYARD_JUPYTER_PORT = env.int("DOCKYARD_JUPYTER_PORT", default=8888)
# Bounds the "waiting for Jupyter" step: past it the start fails with the container's log.
DOCKYARD_WORKSPACE_START_TIMEOUT_S = env.int("DOCKYARD_WORKSPACE_START_TIMEOUT_S", default=180)
# How often (seconds) a starting workspace is asked whether Jupyter answers yet.
DOCKYARD_WORKSPACE_READY_POLL_S = env.float("DOCKYARD_WORKSPACE_READY_POLL_S", default=0.5)
# Seconds Jupyter gets to shut down (saving kernels' state) before it is killed on stop.
DOCKYARD_WORKSPACE_STOP_GRACE_S = env.int("DOCKYARD_WORKSPACE_STOP_GRACE_S", default=10)
# Opening a workspace goes through a one-time ticket valid this long (seconds).
DOCKYARD_TICKET_MAX_AGE_S = env.int("DOCKYARD_TICKET_MAX_AGE_S", default=60)
# The notebook host's own cookie lasts this long (seconds); opening again renews it.
DOCKYARD_NOTEBOOK_COOKIE_AGE_S = env.int("DOCKYARD_NOTEBOOK_COOKIE_AGE_S", default=12 * 3600)
# The proxy caches "may this person use this workspace" for at most this long (seconds).
DOCKYARD_PROXY_AUTH_CACHE_S = env.float("DOCKYARD_PROXY_AUTH_CACHE_S", default=5.0)

# Beat looks at every running workspace's activity this often (seconds) to stop idle ones;
# the owner is warned DOCKYARD_CULL_WARNING_S before.
DOCKYARD_CULL_INTERVAL_S = env.float("DOCKYARD_CULL_INTERVAL_S", default=60.0)
DOCKYARD_CULL_WARNING_S = env.int("DOCKYARD_CULL_WARNING_S", default=600)
CELERY_BEAT_SCHEDULE["workspaces.cull"] = {"task": "workspaces.cull", "schedule": DOCKYARD_CULL_INTERVAL_S}

# --- Image builds -------------------------------------------------------------------------

# The local base image catalog builds start from (made by scripts/build-base-image.sh).
DOCKYARD_BASE_IMAGE = env.str("DOCKYARD_BASE_IMAGE", default="dockyard/base:bookworm")
# CA bundle copied into built images and given to pip (for networks that inspect TLS).
# Defaults to this host's own bundle, so builds trust what the host trusts.
_HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DOCKYARD_BUILD_CA_BUNDLE = env.str(
    "DOCKYARD_BUILD_CA_BUNDLE", default=str(_HOST_CA_BUNDLE) if _HOST_CA_BUNDLE.exists() else ""
)
# Package index for pip inside builds; empty means pip's default (PyPI).
DOCKYARD_PIP_INDEX_URL = env.str("DOCKYARD_PIP_INDEX_URL", default="")

# --- Quotas and admission -----------------------------------------------------------------

# Beat runs an admission pass this often (seconds), besides the pass queued on every release:
# it bounds how long queued work waits after capacity frees up without a release (a quota
# raised, a device undrained) or after a lost task.
DOCKYARD_ADMISSION_PASS_INTERVAL_S = env.float("DOCKYARD_ADMISSION_PASS_INTERVAL_S", default=30.0)
# GPUs are discovered from the runtime's capacity() this often (seconds), and at start-up.
DOCKYARD_INVENTORY_SYNC_INTERVAL_S = env.float("DOCKYARD_INVENTORY_SYNC_INTERVAL_S", default=300.0)
CELERY_BEAT_SCHEDULE["quotas.inventory_sync"] = {
    "task": "quotas.inventory_sync",
    "schedule": DOCKYARD_INVENTORY_SYNC_INTERVAL_S,
}
CELERY_BEAT_SCHEDULE["quotas.admission_pass"] = {
    "task": "quotas.admission_pass",
    "schedule": DOCKYARD_ADMISSION_PASS_INTERVAL_S,
}
# A queued request that waited longer than this (seconds) stops being overtaken by smaller
# ones (backfill): the capacity it waits for is held until it fits.
DOCKYARD_QUEUE_STARVATION_S = env.int("DOCKYARD_QUEUE_STARVATION_S", default=3600)
# Fair share orders the queue by each team's GPU-hours over this many past hours.
DOCKYARD_FAIR_SHARE_WINDOW_H = env.int("DOCKYARD_FAIR_SHARE_WINDOW_H", default=7 * 24)
# After this many seconds a queued-but-unstarted admission pass no longer stops releases from
# queuing another (guards against a lost task).
DOCKYARD_ADMISSION_PASS_PENDING_TTL_S = env.int("DOCKYARD_ADMISSION_PASS_PENDING_TTL_S", default=60)
# The usage page charts cover this many past days.
DOCKYARD_USAGE_CHART_DAYS = env.int("DOCKYARD_USAGE_CHART_DAYS", default=30)

# --- Health -------------------------------------------------------------------------------

# /readyz waits this long for a Celery worker to answer a ping before calling it down.
DOCKYARD_READY_WORKER_TIMEOUT_S = env.float("DOCKYARD_READY_WORKER_TIMEOUT_S", default=2.0)
# ... and this long for the broker, database and container engine to answer.
DOCKYARD_READY_CONNECT_TIMEOUT_S = env.float("DOCKYARD_READY_CONNECT_TIMEOUT_S", default=3.0)

# --- Audit --------------------------------------------------------------------------------

# Signs audit checkpoints (HMAC-SHA256). Kept apart from SECRET_KEY, which every web process
# holds: whoever has this key can forge checkpoints. Required in production.
DOCKYARD_AUDIT_KEY = env.str(
    "DOCKYARD_AUDIT_KEY", default="dev-only-audit-key-change-me" if DEBUG else environ.Env.NOTSET
)
# Where checkpoints are appended (JSON lines); empty: only the `dockyard.audit.checkpoint`
# log line. Point it somewhere the database's users cannot rewrite.
DOCKYARD_AUDIT_CHECKPOINT_FILE = env.str(
    "DOCKYARD_AUDIT_CHECKPOINT_FILE", default=str(VAR_DIR / "audit-checkpoints.jsonl")
)
# How often beat writes a checkpoint: the most history a rebuilt chain can hide unproven.
DOCKYARD_AUDIT_CHECKPOINT_INTERVAL_S = env.int("DOCKYARD_AUDIT_CHECKPOINT_INTERVAL_S", default=3600)
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "audit.checkpoint",
    "schedule": DOCKYARD_AUDIT_CHECKPOINT_INTERVAL_S,
    "options": {"queue": "default"},
}
# Rows per page on the audit page and API (the API's `limit` may ask for up to the maximum).
DOCKYARD_AUDIT_PAGE_SIZE = env.int("DOCKYARD_AUDIT_PAGE_SIZE", default=50)
DOCKYARD_AUDIT_PAGE_SIZE_MAX = 500

# --- Auth and API -------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.core.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Dockyard API",
    "DESCRIPTION": "Workspaces, jobs, images, quotas and audit. Authenticate with "
    "`Authorization: Bearer <token>` (create tokens under Settings → API tokens).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Several resources have a `status`; each gets its own named enum in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "portal.catalog.models.ImageStatus",
        "BuildStatusEnum": "portal.catalog.models.ImageBuild.Status",
    },
}

# --- Security -----------------------------------------------------------------------------

# Behind TLS (directly or via a proxy that sets X-Forwarded-Proto), cookies are Secure and
# `__Host-` prefixed: bound to this exact host, never readable by notebook subdomains.
HTTPS = env.bool("DOCKYARD_HTTPS", default=False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("DOCKYARD_SESSION_AGE_S", default=12 * 3600)
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
    SECURE_SSL_REDIRECT = env.bool("DOCKYARD_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DOCKYARD_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading binds the domain to HTTPS in browsers for good: a choice for each
    # deployment to make, so off unless asked for (and Django's reminder silenced).
    SECURE_HSTS_PRELOAD = env.bool("DOCKYARD_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Static files, i18n, logging ----------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
