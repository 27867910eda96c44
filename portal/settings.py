"""Dockyard settings: the one place that reads the environment.

Every variable is listed in `.env.example` with what it does. Defaults are safe for
development; production sets DJANGO_DEBUG=0, SECRET_KEY, ALLOWED_HOSTS and, behind TLS,
DOCKYARD_HTTPS=1 (`manage.py check --deploy` is then clean).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ

from portal.core.logs import configure_structlog, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# Run-time files of the embedded default: SQLite database, filesystem broker, cache.
VAR_DIR = Path(env.str("DOCKYARD_VAR_DIR", default=str(BASE_DIR / "var")))

# Prometheus counters of web, worker and beat meet in this folder (read before any metric is
# made, so it is set here); `make run` clears it at start-up.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# With a token, /metrics needs `Authorization: Bearer <token>`; without, only this machine and staff.
DOCKYARD_METRICS_TOKEN = env.str("DOCKYARD_METRICS_TOKEN", default="")
# A worker in its own pod or container serves its counters on this port (0: off); the web's
# /metrics has only the counters of processes sharing its PROMETHEUS_MULTIPROC_DIR.
DOCKYARD_WORKER_METRICS_PORT = env.int("DOCKYARD_WORKER_METRICS_PORT", default=0)
# Every interface, so a scraper in the cluster reaches the pod; without a token, any but this
# machine is refused.
DOCKYARD_WORKER_METRICS_ADDRESS = env.str("DOCKYARD_WORKER_METRICS_ADDRESS", default="0.0.0.0")  # noqa: S104

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
    "jobs",
    "portal.quotas",
    "portal.core.admin_config.DockyardAdminConfig",
    "django.contrib.auth",
    "axes",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_prometheus",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "portal.core.logs.RequestContextMiddleware",
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
    "portal.core.logs.UserContextMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lock-out page.
    "axes.middleware.AxesMiddleware",
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
    # A bounded pool per process instead of persistent connections: under ASGI every request
    # may run in a thread of its own, and a connection kept per thread exhausts the server's
    # max_connections. The pool needs CONN_MAX_AGE=0 (connections go back to it after each
    # request). Size it so that every process together stays below PostgreSQL's
    # max_connections (100 by default, 3 reserved): web processes + worker concurrency (each
    # prefork child has its own pool) + beat, times DOCKYARD_DB_POOL_MAX. The default set-up
    # (1 web, a worker at --concurrency 2, 1 beat) holds at most 4 x 10 = 40 connections.
    DOCKYARD_DB_POOL_MAX = env.int("DOCKYARD_DB_POOL_MAX", default=10)
    # Connections a process keeps open while idle.
    DOCKYARD_DB_POOL_MIN = env.int("DOCKYARD_DB_POOL_MIN", default=1)
    # A request waits this long (seconds) for a free connection before failing: under load it
    # is slowed, not refused.
    DOCKYARD_DB_POOL_TIMEOUT_S = env.float("DOCKYARD_DB_POOL_TIMEOUT_S", default=30.0)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(DOCKYARD_DB_POOL_MIN, DOCKYARD_DB_POOL_MAX),
        "max_size": DOCKYARD_DB_POOL_MAX,
        "timeout": DOCKYARD_DB_POOL_TIMEOUT_S,
    }
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
CELERY_TASK_ROUTES = {
    "catalog.build_image": {"queue": "builds"},
    "workspaces.*": {"queue": "runtime"},
    "jobs.*": {"queue": "runtime"},
    "workloads.*": {"queue": "runtime"},
    "quotas.team_sync": {"queue": "runtime"},
}
CELERY_TASK_ACKS_LATE = True
# Sending a task gives up after about a second when the broker is down (the request goes on;
# see portal.celery.Task), instead of holding the request for kombu's default retries.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
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
# What the engine keeps of each workload container's output (json-file driver): files of at
# most this many MiB, this many of them, oldest dropped first.
DOCKYARD_DOCKER_LOG_MAX_MB = env.int("DOCKYARD_DOCKER_LOG_MAX_MB", default=50)
DOCKYARD_DOCKER_LOG_FILES = env.int("DOCKYARD_DOCKER_LOG_FILES", default=3)
# Labels put on every workload container and volume ("key=value,key=value"). They tell apart
# installations (or test runs) sharing one engine: each sees, reconciles and removes only
# the workloads carrying its own labels.
DOCKYARD_WORKLOAD_LABELS = env.dict("DOCKYARD_WORKLOAD_LABELS", default={"dockyard.installation": "default"})

# --- Kubernetes ---------------------------------------------------------------------------
# Used when DOCKYARD_RUNTIME=kubernetes (docs/kubernetes.md, "Runtime backend").

# Each team's workloads run in the namespace <prefix><team>, made on first use.
DOCKYARD_K8S_NAMESPACE_PREFIX = env.str("DOCKYARD_K8S_NAMESPACE_PREFIX", default="dockyard-")
# Storage class and size of workspace homes and job outputs ("" = the cluster's default class).
DOCKYARD_K8S_STORAGE_CLASS = env.str("DOCKYARD_K8S_STORAGE_CLASS", default="")
DOCKYARD_K8S_HOME_SIZE = env.str("DOCKYARD_K8S_HOME_SIZE", default="10Gi")
DOCKYARD_K8S_OUTPUT_SIZE = env.str("DOCKYARD_K8S_OUTPUT_SIZE", default="10Gi")
# A ReadWriteMany class for the outputs of multi-node jobs, which every node writes ("" = the one above).
DOCKYARD_K8S_SHARED_STORAGE_CLASS = env.str("DOCKYARD_K8S_SHARED_STORAGE_CLASS", default="")
# The cluster's DNS domain: the proxy reaches a workspace at <service>.<namespace>.svc.<domain>.
DOCKYARD_K8S_CLUSTER_DOMAIN = env.str("DOCKYARD_K8S_CLUSTER_DOMAIN", default="cluster.local")
# How readiness and the proxy reach a workspace pod: "service" (its Service's DNS name; a
# portal inside the cluster) or "pod-ip" (the pod's address; a portal outside the cluster on
# a network routed to the pods, which cannot resolve the cluster's names).
DOCKYARD_K8S_REACH = env.str("DOCKYARD_K8S_REACH", default="service")
# With "pod-ip": the addresses such a portal connects from, let in by the workloads' policy.
DOCKYARD_K8S_PORTAL_CIDRS = env.list("DOCKYARD_K8S_PORTAL_CIDRS", default=[])
# Where the portal's own pods run, and their labels: the only pods a workload accepts
# connections from ("" namespace = the portal pod's own namespace in-cluster, else "dockyard").
DOCKYARD_K8S_PORTAL_NAMESPACE = env.str("DOCKYARD_K8S_PORTAL_NAMESPACE", default="")
DOCKYARD_K8S_PORTAL_POD_LABELS = env.dict(
    "DOCKYARD_K8S_PORTAL_POD_LABELS", default={"app.kubernetes.io/name": "dockyard"}
)
# Workloads may look names up (port 53) and reach the internet, never private ranges (RFC 1918,
# link-local, 100.64/10); also blocked: these addresses, and the cluster's pod and service
# ranges (needed when they are not private). The allow-list names private ranges they may
# reach all the same (a package mirror).
DOCKYARD_K8S_BLOCKED_EGRESS = env.list("DOCKYARD_K8S_BLOCKED_EGRESS", default=["169.254.169.254/32"])
DOCKYARD_K8S_CLUSTER_CIDRS = env.list("DOCKYARD_K8S_CLUSTER_CIDRS", default=[])
DOCKYARD_K8S_EGRESS_ALLOW = env.list("DOCKYARD_K8S_EGRESS_ALLOW", default=[])
# The GPU resource name, the node label naming the GPU model (NVIDIA's GPU feature discovery
# sets both) and the label with each GPU's memory in MiB.
DOCKYARD_K8S_GPU_RESOURCE = env.str("DOCKYARD_K8S_GPU_RESOURCE", default="nvidia.com/gpu")
DOCKYARD_K8S_GPU_PRODUCT_LABEL = env.str("DOCKYARD_K8S_GPU_PRODUCT_LABEL", default="nvidia.com/gpu.product")
DOCKYARD_K8S_GPU_MEMORY_LABEL = env.str("DOCKYARD_K8S_GPU_MEMORY_LABEL", default="nvidia.com/gpu.memory")
# Tolerations GPU pods get, for GPU nodes tainted to keep other pods away (a JSON list).
DOCKYARD_K8S_GPU_TOLERATIONS = env.json(
    "DOCKYARD_K8S_GPU_TOLERATIONS", default=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
)
# The rendezvous port of multi-node jobs (MASTER_PORT, on index 0).
DOCKYARD_K8S_MASTER_PORT = env.int("DOCKYARD_K8S_MASTER_PORT", default=29500)
# A finished Job is deleted by the cluster this long after it ends, if Dockyard has not removed
# it first (after keeping its log and outputs): longer than Dockyard may ever be down.
DOCKYARD_K8S_JOB_TTL_S = env.int("DOCKYARD_K8S_JOB_TTL_S", default=86400)
# A Job's deadline is its timeout plus this: Dockyard's own timeout stops it first, keeping
# its log; the cluster's deadline is the backstop when Dockyard's workers are down.
DOCKYARD_K8S_JOB_DEADLINE_SLACK_S = env.int("DOCKYARD_K8S_JOB_DEADLINE_SLACK_S", default=60)
# How long a stopped pod's processes get after SIGTERM (the pod's terminationGracePeriodSeconds).
DOCKYARD_K8S_TERMINATION_GRACE_S = env.int("DOCKYARD_K8S_TERMINATION_GRACE_S", default=10)
# How long stop() waits, past the grace period, for the kubelet to report the pods ended.
DOCKYARD_K8S_STOP_WAIT_S = env.int("DOCKYARD_K8S_STOP_WAIT_S", default=30)
# How long remove(keep_data=False) waits for deleted claims to go (the pvc-protection
# finalizer holds them while a pod still uses them); past it they are reported as going.
DOCKYARD_K8S_REMOVE_WAIT_S = env.int("DOCKYARD_K8S_REMOVE_WAIT_S", default=30)
# imagePullPolicy of workload containers (images are pinned by digest, so IfNotPresent is exact).
DOCKYARD_K8S_IMAGE_PULL_POLICY = env.str("DOCKYARD_K8S_IMAGE_PULL_POLICY", default="IfNotPresent")
# Files put in place before start (a job's /code) travel as Secrets of up to 768 KiB each:
# the largest gzipped archive accepted on a cluster.
DOCKYARD_K8S_FILES_MAX_MB = env.int("DOCKYARD_K8S_FILES_MAX_MB", default=32)
# Reading files of an ended workload starts a helper pod on its volumes: how long it may take
# to start, and how long it lives at most. Its image: the workload's, else this one.
DOCKYARD_K8S_FETCH_START_S = env.int("DOCKYARD_K8S_FETCH_START_S", default=120)
DOCKYARD_K8S_FETCH_LIFETIME_S = env.int("DOCKYARD_K8S_FETCH_LIFETIME_S", default=900)
DOCKYARD_K8S_HELPER_IMAGE = env.str("DOCKYARD_K8S_HELPER_IMAGE", default="")
# One API call may take this long before the cluster counts as not answering.
DOCKYARD_K8S_API_TIMEOUT_S = env.float("DOCKYARD_K8S_API_TIMEOUT_S", default=10.0)
# Status by watch: each process keeps an index of its workloads' pods and Jobs, fed by a
# watch; each watch request lasts DOCKYARD_K8S_WATCH_TIMEOUT_S, and the index is trusted for
# list_managed() only while it heard from the API server within DOCKYARD_K8S_WATCH_FRESH_S.
DOCKYARD_K8S_WATCH = env.bool("DOCKYARD_K8S_WATCH", default=True)
DOCKYARD_K8S_WATCH_TIMEOUT_S = env.int("DOCKYARD_K8S_WATCH_TIMEOUT_S", default=60)
DOCKYARD_K8S_WATCH_FRESH_S = env.float("DOCKYARD_K8S_WATCH_FRESH_S", default=90.0)
# Kueue: jobs of a team named here ("team=local-queue,...") or of every team (a single
# LocalQueue) are created suspended and labelled for that queue; Kueue admits and starts them.
DOCKYARD_KUEUE_QUEUES = env.dict("DOCKYARD_KUEUE_QUEUES", default={})
DOCKYARD_KUEUE_LOCAL_QUEUE = env.str("DOCKYARD_KUEUE_LOCAL_QUEUE", default="")

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
# Largest WebSocket message the proxy relays either way (bytes); a bigger one closes the
# connection with 1009. uvicorn's --ws-max-size (16 MiB by default) also bounds what browsers send.
DOCKYARD_PROXY_WS_MAX_BYTES = env.int("DOCKYARD_PROXY_WS_MAX_BYTES", default=16 * 1024 * 1024)
# Largest request body the proxy passes to a workspace (bytes; Jupyter's own limit is 512 MiB):
# a bigger one gets 413. Bodies stream through, so this bounds the container, not the web process.
DOCKYARD_PROXY_MAX_BODY_BYTES = env.int("DOCKYARD_PROXY_MAX_BODY_BYTES", default=512 * 1024 * 1024)

# Beat looks at every running workspace's activity this often (seconds) to stop idle ones;
# the owner is warned DOCKYARD_CULL_WARNING_S before.
DOCKYARD_CULL_INTERVAL_S = env.float("DOCKYARD_CULL_INTERVAL_S", default=60.0)
DOCKYARD_CULL_WARNING_S = env.int("DOCKYARD_CULL_WARNING_S", default=600)
CELERY_BEAT_SCHEDULE["workspaces.cull"] = {"task": "workspaces.cull", "schedule": DOCKYARD_CULL_INTERVAL_S}

# --- Training jobs ------------------------------------------------------------------------

# How often (seconds) running jobs are looked at for exits and timeouts while any run; beat
# looks every DOCKYARD_JOB_WATCH_BEAT_S as a backstop.
DOCKYARD_JOB_WATCH_S = env.float("DOCKYARD_JOB_WATCH_S", default=1.0)
DOCKYARD_JOB_WATCH_BEAT_S = env.float("DOCKYARD_JOB_WATCH_BEAT_S", default=15.0)
CELERY_BEAT_SCHEDULE["jobs.watch"] = {"task": "jobs.watch", "schedule": DOCKYARD_JOB_WATCH_BEAT_S}
# A failed attempt is retried after this delay (seconds), doubled each time, at most the maximum.
DOCKYARD_JOB_RETRY_BACKOFF_S = env.float("DOCKYARD_JOB_RETRY_BACKOFF_S", default=10.0)
DOCKYARD_JOB_RETRY_BACKOFF_MAX_S = env.float("DOCKYARD_JOB_RETRY_BACKOFF_MAX_S", default=600.0)
# Seconds a cancelled or timed-out job gets to exit after SIGTERM before it is killed.
DOCKYARD_JOB_STOP_GRACE_S = env.int("DOCKYARD_JOB_STOP_GRACE_S", default=10)
# A started job whose pods are held up by a problem (ImagePullBackOff, a config error) fails
# after this long; one waiting for capacity or for Kueue's admission waits as long as it takes.
DOCKYARD_JOB_START_TIMEOUT_S = env.int("DOCKYARD_JOB_START_TIMEOUT_S", default=600)
# Longest timeout a job may ask for (seconds), and how many retries.
DOCKYARD_JOB_MAX_TIMEOUT_S = env.int("DOCKYARD_JOB_MAX_TIMEOUT_S", default=7 * 24 * 3600)
DOCKYARD_JOB_MAX_RETRIES = env.int("DOCKYARD_JOB_MAX_RETRIES", default=10)
# Most pods one job may train on together (Kubernetes only; each pod gets the whole profile).
DOCKYARD_JOB_MAX_NODES = env.int("DOCKYARD_JOB_MAX_NODES", default=8)
# Uploaded code archives: largest upload, and largest total once unpacked (MiB).
DOCKYARD_JOB_CODE_MAX_MB = env.int("DOCKYARD_JOB_CODE_MAX_MB", default=100)
DOCKYARD_JOB_CODE_MAX_UNPACKED_MB = env.int("DOCKYARD_JOB_CODE_MAX_UNPACKED_MB", default=500)
# Log kept per attempt once the container is gone (KiB; the end is kept when longer).
DOCKYARD_JOB_LOG_MAX_KB = env.int("DOCKYARD_JOB_LOG_MAX_KB", default=4096)
# Files under /output copied into Dockyard's storage when a job ends (MiB in all; the volume
# keeps everything).
DOCKYARD_JOB_OUTPUT_MAX_MB = env.int("DOCKYARD_JOB_OUTPUT_MAX_MB", default=1024)
# Metrics of running jobs are read from /output/metrics.jsonl at most this often (seconds).
DOCKYARD_JOB_METRICS_INTERVAL_S = env.float("DOCKYARD_JOB_METRICS_INTERVAL_S", default=5.0)
# Bounds on reading metrics.jsonl (the job writes it): only its last MAX_MB are read, longer
# lines are skipped, at most MAX_SERIES metrics are kept, each thinned to about MAX_POINTS points.
DOCKYARD_JOB_METRICS_MAX_MB = env.int("DOCKYARD_JOB_METRICS_MAX_MB", default=20)
DOCKYARD_JOB_METRICS_MAX_LINE_KB = env.int("DOCKYARD_JOB_METRICS_MAX_LINE_KB", default=64)
DOCKYARD_JOB_METRICS_MAX_SERIES = env.int("DOCKYARD_JOB_METRICS_MAX_SERIES", default=100)
DOCKYARD_JOB_METRICS_MAX_POINTS = env.int("DOCKYARD_JOB_METRICS_MAX_POINTS", default=2000)
# A workload's log line longer than this (KiB) is cut, with a marker saying so, wherever
# Dockyard reads logs.
DOCKYARD_LOG_LINE_MAX_KB = env.int("DOCKYARD_LOG_LINE_MAX_KB", default=16)
# Most entries an uploaded code archive may hold (files and folders).
DOCKYARD_JOB_CODE_MAX_FILES = env.int("DOCKYARD_JOB_CODE_MAX_FILES", default=100_000)
# Encrypts secret env values at rest (a Fernet key); empty: derived from SECRET_KEY.
DOCKYARD_SECRETS_KEY = env.str("DOCKYARD_SECRETS_KEY", default="")
# Code archives and job outputs (Django's default file storage).
MEDIA_ROOT = env.str("DOCKYARD_MEDIA_ROOT", default=str(VAR_DIR / "media"))

# --- Reconciliation -----------------------------------------------------------------------

# Beat compares the database with the backend this often (seconds) and corrects differences.
DOCKYARD_RECONCILE_INTERVAL_S = env.float("DOCKYARD_RECONCILE_INTERVAL_S", default=15.0)
CELERY_BEAT_SCHEDULE["workloads.reconcile"] = {"task": "workloads.reconcile", "schedule": DOCKYARD_RECONCILE_INTERVAL_S}
# A workload may sit this long (seconds) in a step (pending, stopping, ...) before the
# reconciler takes it as lost and queues the step again (at most every DOCKYARD_RECONCILE_REDRIVE_S).
DOCKYARD_RECONCILE_GRACE_S = env.float("DOCKYARD_RECONCILE_GRACE_S", default=60.0)
DOCKYARD_RECONCILE_REDRIVE_S = env.float("DOCKYARD_RECONCILE_REDRIVE_S", default=300.0)

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
# Builds run on their own bridge network (the bridge has a fixed host-side name, which
# scripts/workload-firewall.sh fences: nothing beyond the host, and on the host only the proxy).
DOCKYARD_BUILD_NETWORK = env.str("DOCKYARD_BUILD_NETWORK", default="dockyard-builds")
DOCKYARD_BUILD_BRIDGE = env.str("DOCKYARD_BUILD_BRIDGE", default="dy-builds")
# The only hosts a build may reach, through the egress proxy the builds worker runs on the
# build bridge's gateway at this port ("*.example.org" allows its subdomains). The host of
# DOCKYARD_PIP_INDEX_URL is allowed as well.
DOCKYARD_BUILD_EGRESS_HOSTS = env.list(
    "DOCKYARD_BUILD_EGRESS_HOSTS",
    default=["pypi.org", "files.pythonhosted.org", "deb.debian.org", "security.debian.org", "registry.npmjs.org"],
)
DOCKYARD_BUILD_PROXY_PORT = env.int("DOCKYARD_BUILD_PROXY_PORT", default=3128)
# What each build step may use: memory (MiB, no swap beyond it) and CPUs.
DOCKYARD_BUILD_MEMORY_MIB = env.int("DOCKYARD_BUILD_MEMORY_MIB", default=4096)
DOCKYARD_BUILD_CPUS = env.float("DOCKYARD_BUILD_CPUS", default=2.0)
# The cgroup every build step runs under; scripts/workload-firewall.sh gives it a process limit
# (DOCKYARD_BUILD_PIDS_LIMIT), which the engine's build API cannot set per step.
DOCKYARD_BUILD_CGROUP_PARENT = env.str("DOCKYARD_BUILD_CGROUP_PARENT", default="dockyard-builds")
# A build running longer than this (seconds, all steps together) is stopped and reported failed.
DOCKYARD_BUILD_TIMEOUT_S = env.int("DOCKYARD_BUILD_TIMEOUT_S", default=3600)

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

# Sign-in throttling (django-axes): after this many failed sign-ins for one account, or from
# one address, further attempts for it are refused for DOCKYARD_SIGNIN_LOCKOUT_S, even with
# the right password. The address is the TCP peer (forwarded headers only from
# FORWARDED_ALLOW_IPS, resolved by uvicorn), the same one the audit log records.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("DOCKYARD_SIGNIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("DOCKYARD_SIGNIN_LOCKOUT_S", default=900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks
AXES_CLIENT_IP_CALLABLE = "portal.audit.services.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# A person may hold at most this many usable (unrevoked, unexpired) API tokens at once, so a
# leaked token or a runaway script cannot mint tokens without end.
DOCKYARD_TOKENS_PER_USER_MAX = env.int("DOCKYARD_TOKENS_PER_USER_MAX", default=50)

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
        "WorkspaceStateEnum": "workspaces.models.WorkspaceState",
        "JobStateEnum": "jobs.models.JobState",
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

# One JSON object per line (request id, user, workload uid, task), or "console" for lines
# meant for a person at a terminal. Celery's processes log through the same configuration.
DOCKYARD_LOG_FORMAT = env.str("DOCKYARD_LOG_FORMAT", default="json")
LOGGING = logging_config(fmt=DOCKYARD_LOG_FORMAT, level=env.str("LOG_LEVEL", default="INFO"))
configure_structlog()
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
