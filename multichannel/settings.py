"""Settings for Multichannel: one module, read from the environment (12-factor).

Every variable is listed with a comment in `.env.example`. A `.env` file beside
`manage.py` is read when present; real environment variables win over it.
Contradictory or missing configuration is reported by the system checks in
`multichannel/checks.py` (ids `multichannel.E0xx`); the few things without which the
process must not even start (a real SECRET_KEY and MKA1_API_KEY in production) raise
`ImproperlyConfigured` here, naming the variable.
"""

import os
import tempfile
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)


def _secret(name: str, default: str = "") -> str:
    """A secret from the environment, surrounding whitespace stripped (a mounted secret
    file often ends in a newline). One that still holds whitespace or a control
    character is refused: sent in a header it would fail, and the error would carry it
    into logs. The message names the variable, never the value."""
    value = str(env.str(name, default=default)).strip()
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
        raise ImproperlyConfigured(
            f"{name} contains whitespace or control characters inside it; "
            "check how the secret is stored (the value is not shown)."
        )
    return value


# Only ever used with DEBUG on; production refuses it below.
_DEV_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY: str = _secret("SECRET_KEY") or (_DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY.startswith("django-insecure-")):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value when DEBUG is off "
        '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
    )

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS",
    default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [],
)

# --- MKA1 -------------------------------------------------------------------------
MKA1_API_KEY: str = _secret("MKA1_API_KEY")
# The sandbox stands in for MKA1 and the Graph API on one machine. On by default only
# for development without a key. Refused outright with DEBUG off: servers such as
# gunicorn run no system checks, and the sandbox phone page lists live sign-in links.
SANDBOX: bool = env.bool("SANDBOX", default=DEBUG and not MKA1_API_KEY)
if SANDBOX and not DEBUG:
    raise ImproperlyConfigured(
        "SANDBOX is on while DEBUG is off: the sandbox fakes MKA1 and WhatsApp and is "
        "for development and tests only. Unset SANDBOX (or set DEBUG=true locally)."
    )
if not DEBUG and not MKA1_API_KEY:
    raise ImproperlyConfigured(
        "MKA1_API_KEY must be set when DEBUG is off: both channels call MKA1 with it."
    )
if SANDBOX and not MKA1_API_KEY:
    # The sandbox needs a bearer token like the real API; a fixed, obviously fake one.
    MKA1_API_KEY = "sandbox-key-not-secret"

# "sandbox://mka1" routes calls in-process to the sandbox app (no port needed);
# point it at http://127.0.0.1:8000/sandbox/mka1 to exercise real HTTP instead.
MKA1_BASE_URL: str = env.str(
    "MKA1_BASE_URL", default="sandbox://mka1" if SANDBOX else "https://apigw.mka1.com"
).rstrip("/")
MKA1_MODEL: str = env.str("MKA1_MODEL", default="meetkai:functionary-pt")
MKA1_TIMEOUT: float = env.float("MKA1_TIMEOUT", default=60.0)  # read timeout, seconds
MKA1_CONNECT_TIMEOUT: float = env.float("MKA1_CONNECT_TIMEOUT", default=5.0)
MKA1_MAX_RETRIES: int = env.int("MKA1_MAX_RETRIES", default=3)
MKA1_BACKOFF_SECONDS: float = env.float("MKA1_BACKOFF_SECONDS", default=0.5)
MKA1_BACKOFF_MAX_SECONDS: float = env.float("MKA1_BACKOFF_MAX_SECONDS", default=30.0)
# How a turn is chained to the previous one: "both" sends conversation and
# previous_response_id (as the seed guide does), or only one of them.
MKA1_CHAIN_MODE: str = env.str("MKA1_CHAIN_MODE", default="both")

SANDBOX_MKA1_LATENCY_MS: int = env.int("SANDBOX_MKA1_LATENCY_MS", default=0)
# Behave like OpenAI-style servers that refuse conversation + previous_response_id.
SANDBOX_MKA1_REFUSE_BOTH: bool = env.bool("SANDBOX_MKA1_REFUSE_BOTH", default=False)
# How long a media download URL from the Graph API stand-in stays valid, seconds (Meta's
# live about five minutes; the media id itself lives much longer). 0: expired at once.
SANDBOX_MEDIA_URL_SECONDS: int = env.int("SANDBOX_MEDIA_URL_SECONDS", default=300)

# --- WhatsApp Cloud API -----------------------------------------------------------
# With the sandbox, fixed fake values stand in so everything runs on one machine; in
# production the system checks (multichannel.E010...) name whichever is missing.
_sandbox_default = "sandbox-not-secret" if SANDBOX else ""
WHATSAPP_VERIFY_TOKEN: str = _secret("WHATSAPP_VERIFY_TOKEN", default=_sandbox_default)
WHATSAPP_APP_SECRET: str = _secret("WHATSAPP_APP_SECRET", default=_sandbox_default)
WHATSAPP_TOKEN: str = _secret("WHATSAPP_TOKEN", default=_sandbox_default)
WHATSAPP_PHONE_NUMBER_ID: str = env.str(
    "WHATSAPP_PHONE_NUMBER_ID", default="100000000000001" if SANDBOX else ""
)
WHATSAPP_GRAPH_URL: str = env.str(
    "WHATSAPP_GRAPH_URL", default="sandbox://graph" if SANDBOX else "https://graph.facebook.com"
).rstrip("/")
WHATSAPP_GRAPH_VERSION: str = env.str("WHATSAPP_GRAPH_VERSION", default="v25.0")
WHATSAPP_TIMEOUT: float = env.float("WHATSAPP_TIMEOUT", default=15.0)
WHATSAPP_MAX_RETRIES: int = env.int("WHATSAPP_MAX_RETRIES", default=3)
# Meta's payloads are a few KB; anything far larger is not a webhook we want to parse.
WHATSAPP_MAX_BODY_BYTES: int = env.int("WHATSAPP_MAX_BODY_BYTES", default=1024 * 1024)
WHATSAPP_UNSUPPORTED_REPLY: str = env.str(
    "WHATSAPP_UNSUPPORTED_REPLY",
    default="Sorry, I can't read this kind of message. Please send text, a voice note, "
    "a photo or a document.",
)
# Opting out: STOP (and Meta's user_preferences "stop") ends every outbound message but
# the confirmation; START resumes. Case-insensitive.
WHATSAPP_STOP_KEYWORD: str = env.str("WHATSAPP_STOP_KEYWORD", default="STOP")
WHATSAPP_START_KEYWORD: str = env.str("WHATSAPP_START_KEYWORD", default="START")
WHATSAPP_STOP_REPLY: str = env.str(
    "WHATSAPP_STOP_REPLY",
    default="You won't get any more messages from us. Send START to talk again.",
)
WHATSAPP_START_REPLY: str = env.str(
    "WHATSAPP_START_REPLY", default="Welcome back! Ask me anything."
)
# A reply outside WhatsApp's customer-service window (24 hours after the user's last
# message) may only be a template: "name:language", e.g. "reengage:en_US". Unset, such
# a reply is marked failed with the reason instead.
WHATSAPP_REENGAGE_TEMPLATE: str = env.str("WHATSAPP_REENGAGE_TEMPLATE", default="")
WHATSAPP_WINDOW_HOURS: float = env.float("WHATSAPP_WINDOW_HOURS", default=24.0)
# "typing…" lasts about 25 s on the user's phone; it is shown again this often.
WHATSAPP_TYPING_RENEW_SECONDS: float = env.float("WHATSAPP_TYPING_RENEW_SECONDS", default=20.0)
# What a user on any channel is told when MKA1 refuses their message for good.
# WHATSAPP_FAILURE_REPLY is its old name, still read (with a warning) when set alone.
_DEFAULT_FAILURE_REPLY = "Sorry, something went wrong answering that. Please try again in a moment."
if "FAILURE_REPLY" not in os.environ and "WHATSAPP_FAILURE_REPLY" in os.environ:
    warnings.warn(
        "WHATSAPP_FAILURE_REPLY is deprecated: it answers web users too; set FAILURE_REPLY.",
        DeprecationWarning,
        stacklevel=1,
    )
    FAILURE_REPLY: str = env.str("WHATSAPP_FAILURE_REPLY")
else:
    FAILURE_REPLY = env.str("FAILURE_REPLY", default=_DEFAULT_FAILURE_REPLY)

# --- Media (voice notes, photos, documents) ------------------------------------------
# Larger files are refused with MEDIA_FAILURE_REPLY (MKA1 transcribes up to 25 MB).
MEDIA_MAX_BYTES: int = env.int("MEDIA_MAX_BYTES", default=25 * 1024 * 1024)
# Photos and documents up to this size go to MKA1 inline (a data URI); larger ones are
# uploaded first (files.create) and referred to by id.
MKA1_INLINE_MEDIA_MAX_BYTES: int = env.int("MKA1_INLINE_MEDIA_MAX_BYTES", default=1024 * 1024)
# What MKA1 is asked about a photo or a document sent without a caption.
MEDIA_IMAGE_PROMPT: str = env.str("MEDIA_IMAGE_PROMPT", default="What is in this picture?")
MEDIA_DOCUMENT_PROMPT: str = env.str(
    "MEDIA_DOCUMENT_PROMPT", default="Please summarise this document."
)
# Told when a file cannot be used; {reason} says why.
MEDIA_FAILURE_REPLY: str = env.str(
    "MEDIA_FAILURE_REPLY", default="Sorry, I couldn't use your file: {reason}."
)
# Where kept files live: local files under MEDIA_ROOT, or an S3-compatible bucket
# (MEDIA_S3_BUCKET, with django-storages: pip install -e ".[s3]"). Never served
# publicly: only their owner fetches them, through the API.
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(BASE_DIR / "media"))
MEDIA_S3_BUCKET: str = env.str("MEDIA_S3_BUCKET", default="")

# --- Web app ----------------------------------------------------------------------
# The WhatsApp message that asks for a web sign-in link (case-insensitive).
LOGIN_KEYWORD: str = env.str("LOGIN_KEYWORD", default="LOGIN")
# Public base URL of the web app, used in the sign-in links sent over WhatsApp. Must be
# https with DEBUG off (multichannel.E012). `manage.py serve` sets it to the address it
# serves when it is unset, so links follow a development server on another port.
SITE_URL: str = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
SIGNIN_LINK_MINUTES: int = env.int("SIGNIN_LINK_MINUTES", default=10)
API_THROTTLE_READ: str = env.str("API_THROTTLE_READ", default="120/min")
API_THROTTLE_SEND: str = env.str("API_THROTTLE_SEND", default="20/min")
# Stored responses one user may retrieve per day (each retrieval is an audit event).
API_RETRIEVALS_PER_DAY: int = env.int("API_RETRIEVALS_PER_DAY", default=500)
# Failed MKA1 reads recorded per user per hour; past that they are counted, not recorded
# one by one, so probing with bad ids cannot flood the ledger.
AUDIT_FAILURES_PER_USER_HOUR: int = env.int("AUDIT_FAILURES_PER_USER_HOUR", default=30)
# Web server processes (gunicorn reads the same variable): with more than one, rate
# limits need a cache the processes share (multichannel.E013).
WEB_CONCURRENCY: int = env.int("WEB_CONCURRENCY", default=min(4, (os.cpu_count() or 1) + 1))

# --- Limits per sender ----------------------------------------------------------------
# MKA1-bound messages per end user: a token bucket of SENDER_BURST messages that refills
# one message every SENDER_REFILL_SECONDS. Over it, the message is stored and marked,
# gets no MKA1 call, and the user gets SENDER_LIMIT_REPLY at most once per
# SENDER_LIMIT_NOTICE_SECONDS.
SENDER_BURST: int = env.int("SENDER_BURST", default=10)
SENDER_REFILL_SECONDS: float = env.float("SENDER_REFILL_SECONDS", default=6.0)
SENDER_LIMIT_NOTICE_SECONDS: int = env.int("SENDER_LIMIT_NOTICE_SECONDS", default=60)
SENDER_LIMIT_REPLY: str = env.str(
    "SENDER_LIMIT_REPLY",
    default="You're sending messages faster than I can answer. Please wait a minute "
    "and send your question again.",
)
# At most one sign-in link per end user this often; a new link revokes older unused ones.
SIGNIN_LINK_INTERVAL_SECONDS: int = env.int("SIGNIN_LINK_INTERVAL_SECONDS", default=120)

# --- Audit ledger: signed checkpoints (README, "For auditors") ---------------------
# The Ed25519 note signer key (PRIVATE+KEY+...), or the path of a file holding it; from
# `manage.py audit_keygen`. Unset: no checkpoints are signed, nothing else changes.
AUDIT_SIGNING_KEY: str = env.str("AUDIT_SIGNING_KEY", default="").strip()
# The checkpoint's origin line (the log's name). Unset: the signing key's name, which
# audit_keygen derives from SITE_URL (e.g. 127.0.0.1:8000/audit).
AUDIT_LOG_ORIGIN: str = env.str("AUDIT_LOG_ORIGIN", default="").strip()
# A new checkpoint is signed this often when new events exist.
AUDIT_CHECKPOINT_MINUTES: int = env.int("AUDIT_CHECKPOINT_MINUTES", default=60)
# Every checkpoint is also written here (a directory), and POSTed to each witness URL.
AUDIT_CHECKPOINT_DIR: str = env.str("AUDIT_CHECKPOINT_DIR", default="")
AUDIT_WITNESS_URLS: list[str] = env.list("AUDIT_WITNESS_URLS", default=[])
# Read timeout (seconds) for witnesses and the time-stamp authority.
AUDIT_PUBLISH_TIMEOUT: float = env.float("AUDIT_PUBLISH_TIMEOUT", default=10.0)
# Optional RFC 3161 time-stamp authority, and the PEM file of the root certificate(s)
# its tokens are verified against before they are stored.
AUDIT_TSA_URL: str = env.str("AUDIT_TSA_URL", default="")
AUDIT_TSA_CA_FILE: str = env.str("AUDIT_TSA_CA_FILE", default="")

# --- Data protection: erasure, retention, legal hold (README, "Erasure") -------------
# A WhatsApp user asks for erasure with this text, then confirms with the confirmation
# word within ERASURE_CONFIRM_SECONDS (both case-insensitive).
WHATSAPP_ERASE_KEYWORD: str = env.str("WHATSAPP_ERASE_KEYWORD", default="DELETE MY DATA")
WHATSAPP_ERASE_CONFIRM_KEYWORD: str = env.str("WHATSAPP_ERASE_CONFIRM_KEYWORD", default="YES")
ERASURE_CONFIRM_SECONDS: int = env.int("ERASURE_CONFIRM_SECONDS", default=600)
WHATSAPP_ERASE_ASK_REPLY: str = env.str(
    "WHATSAPP_ERASE_ASK_REPLY",
    default="This deletes everything we and our AI provider hold about you: your messages, "
    "our replies, your files and your web sign-ins. It cannot be undone. Reply YES within "
    "10 minutes to go ahead.",
)
WHATSAPP_ERASE_DONE_REPLY: str = env.str(
    "WHATSAPP_ERASE_DONE_REPLY",
    default="Done: your data has been deleted. This is the last message you will get from "
    "us; if you write again, we start afresh.",
)
WHATSAPP_ERASE_HELD_REPLY: str = env.str(
    "WHATSAPP_ERASE_HELD_REPLY",
    default="We can't delete your data right now: we are required to keep it for a legal "
    "reason. Please contact us for details.",
)
# An erasure's outside calls (MKA1 deletes) that keep failing are retried this many
# times, backing off from TURN_RETRY_SECONDS up to RETRY_DELAY_MAX_SECONDS, and then
# reported (logged as an error, shown in the admin); the job resumes when run again.
ERASURE_MAX_ATTEMPTS: int = env.int("ERASURE_MAX_ATTEMPTS", default=10)
# Content (ledger bodies and contexts, messages, replies, media) older than this many
# days is removed daily, except for people under a legal hold. Unset: kept. Never fewer
# than MIN_RETENTION_DAYS (logs must be kept at least six months; multichannel.E015).
CONTENT_RETENTION_DAYS: int | None = env.int("CONTENT_RETENTION_DAYS", default=None)
MIN_RETENTION_DAYS: int = env.int("MIN_RETENTION_DAYS", default=183)

# --- Processing -------------------------------------------------------------------
# A worker holds a per-user lease while it answers that user's messages; a crashed
# worker's lease runs out after this long and the recovery task takes over.
TURN_LEASE_SECONDS: int = env.int("TURN_LEASE_SECONDS", default=300)
# How often a message may fail transiently (MKA1 or delivery) before it is given up on.
TURN_MAX_ATTEMPTS: int = env.int("TURN_MAX_ATTEMPTS", default=6)
# The first retry of a failed step waits this long; each further one waits twice as long.
TURN_RETRY_SECONDS: float = env.float("TURN_RETRY_SECONDS", default=5.0)
# No retry waits longer than this, whatever a server's Retry-After asks: one user's
# later messages (on both channels) wait behind it.
RETRY_DELAY_MAX_SECONDS: float = env.float("RETRY_DELAY_MAX_SECONDS", default=600.0)

# --- Queue (Huey) -----------------------------------------------------------------
REDIS_URL: str = env.str("REDIS_URL", default="")
HUEY: dict[str, Any] = {
    "name": "multichannel",
    # Set explicitly: djhuey would otherwise run tasks inline whenever DEBUG is on,
    # and the webhook must never make the MKA1 call inside the request.
    "immediate": env.bool("HUEY_IMMEDIATE", default=False),
    "utc": True,
    # No task's return value is read: storing each in the queue's backend would cost
    # every task a write.
    "results": False,
    "consumer": {
        "workers": env.int("HUEY_WORKERS", default=8),
        "worker_type": "thread",  # MKA1 calls are I/O-bound: many in flight per process
        "periodic": True,
        "check_worker_health": True,
        # An idle worker polls the SQLite queue at most a second apart (Huey's default
        # backs off to 10 s, so the first message after a quiet spell waited that long).
        # RedisHuey blocks on the queue instead of polling.
        "initial_delay": 0.1,
        "backoff": 1.15,
        "max_delay": 1.0,
    },
}
if REDIS_URL:
    from redis import ConnectionPool

    HUEY.update(
        {
            "huey_class": "huey.RedisHuey",
            # Every consumer thread blocks on the queue with a connection of its own, and
            # the tasks queue more work besides: redis-py's default of 100 connections
            # would fail a consumer of more than about 90 threads.
            "connection_pool": ConnectionPool.from_url(
                REDIS_URL, max_connections=max(100, HUEY["consumer"]["workers"] + 32)
            ),
        }
    )
else:
    HUEY.update(
        {
            "huey_class": "multichannel.queue_storage.SqliteQueue",
            "filename": env.str("HUEY_SQLITE_PATH", default=str(BASE_DIR / "huey.sqlite3")),
        }
    )

# --- Django -----------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "huey.contrib.djhuey",
    "axes",
    "multichannel.apps.MultichannelConfig",
    "audit.apps.AuditConfig",
    "whatsapp.apps.WhatsappConfig",
    "web.apps.WebConfig",
]
if SANDBOX:
    # Development and tests only: never installed (nor migrated) in production.
    INSTALLED_APPS.append("multichannel.sandbox.apps.SandboxConfig")

MIDDLEWARE = [
    "multichannel.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it answers locked-out admin logins.
    "axes.middleware.AxesMiddleware",
]

# Repeated failed admin logins lock the username from that address out for a while
# (django-axes); the lockout is itself logged.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT: int = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME: float = env.float("ADMIN_LOGIN_COOLOFF_HOURS", default=0.5)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# Content-Security-Policy on every page (django-csp): scripts, styles and images from
# this origin only, no inline script or style, no framing.
CONTENT_SECURITY_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

ROOT_URLCONF = "multichannel.urls"
WSGI_APPLICATION = "multichannel.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES: dict[str, dict[str, Any]] = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; IMMEDIATE makes a writing
    # transaction take the lock at BEGIN, so concurrent writers queue instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            # How long a writer waits for another's lock before "database is locked".
            "timeout": env.float("SQLITE_BUSY_TIMEOUT", default=20.0),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests run on a file, not Django's shared-cache in-memory database, so concurrency
    # tests see the same locking as production SQLite (one file per test run).
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"multichannel-test-{os.getpid()}.sqlite3")
    }
# PostgreSQL with DATABASE_POOL_MAX_SIZE: each process shares a pool of at most that
# many connections among its threads instead of keeping one per thread, and a thread
# hands its connection back while it waits on MKA1 or the Graph API (multichannel.http):
# a consumer can then run more threads than the server takes connections.
# (multichannel.E017 refuses a negative size or a timeout that is not positive.)
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
# How long a thread waits for a free pooled connection before its work fails (and is
# retried like any database outage).
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=30.0)
if DATABASE_POOL_MAX_SIZE > 0 and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django must not
# Connections are kept and reused (SQLite too: opening one and applying its pragmas cost
# more than the webhook's own work). No health check by default: it is a `SELECT 1`
# before the first query of every request; a connection broken meanwhile (a database
# restart) fails that one request, Django then drops it, and Meta redelivers.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", env.bool("CONN_HEALTH_CHECKS", default=False))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the admin's and the page's static files from the app server itself.
STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if MEDIA_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_S3_BUCKET,
            "endpoint_url": env.str("MEDIA_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("MEDIA_S3_REGION", default="") or None,
            "access_key": _secret("MEDIA_S3_ACCESS_KEY"),
            "secret_key": _secret("MEDIA_S3_SECRET_KEY"),
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
# In development, straight from the apps; in production from STATIC_ROOT (collectstatic).
WHITENOISE_USE_FINDERS = DEBUG

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["web.auth.EndUserSessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["web.auth.IsEndUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"read": API_THROTTLE_READ, "send": API_THROTTLE_SEND},
    # One error shape, {"error": "..."}, for every API error (web/errors.py).
    "EXCEPTION_HANDLER": "web.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "Multichannel API",
    "DESCRIPTION": "The web channel: a signed-in end user's stored MKA1 responses and thread.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

# Throttle and rate-limit counters: Redis when there is one (shared by every machine);
# without it, files shared by the processes of one machine in production, process
# memory in development. CACHE_URL (django-environ syntax) overrides the choice.
if env.str("CACHE_URL", default=""):
    _cache: dict[str, Any] = env.cache_url("CACHE_URL")
elif REDIS_URL:
    _cache = {"BACKEND": "multichannel.cache.RedisCache", "LOCATION": REDIS_URL}
elif DEBUG:
    _cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
else:
    _cache = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": env.str("CACHE_DIR", default=str(BASE_DIR / "cache")),
    }
CACHES: dict[str, Any] = {"default": _cache}
# Sessions are read from that cache and written through to the database: a signed-in
# request reads its session without a SQL statement (docs/benchmarks.md). Sign-out and
# erasure delete both copies (web.auth, web.privacy).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- HTTPS and cookies (manage.py check --deploy is clean with DEBUG off) ---------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=14 * 24 * 3600)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Load balancers probe over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (only enable if it does).
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Prometheus metrics at /metrics, for a scraper that sends `Authorization: Bearer
# <METRICS_TOKEN>` or comes from one of METRICS_ALLOWED_NETWORKS (CIDRs); nobody else.
METRICS_TOKEN: str = _secret("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS: list[str] = env.list(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"] if DEBUG else []
)

LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
# JSON lines (one object per record, with the request id) in production; text in development.
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "multichannel.observability.RequestIdFilter"},
        "redact": {"()": "multichannel.observability.RedactingFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"},
        "json": {"()": "multichannel.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT if LOG_FORMAT in ("plain", "json") else "json",
            "filters": ["request_id", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs full URLs at DEBUG; keep it quiet so nothing sensitive leaks there.
        "urllib3": {"level": "WARNING"},
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Configured here, so run_huey does not add a second (plain text) handler.
        "huey": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
