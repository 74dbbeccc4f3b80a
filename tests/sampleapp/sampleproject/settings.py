"""Settings read from the environment, as in a container built for djangoscale.

DATABASE_CONN_MAX_AGE (set by the operator): seconds a thread keeps its connection to the
local pgbouncer between requests (0: a new one per request).
DISABLE_SERVER_SIDE_CURSORS: required behind pgbouncer in transaction pool mode.
STATIC_ROOT: where WhiteNoise serves the collected static files from; the image collects them
at build time into /app/staticfiles, `spec.staticFiles` collects them into an emptyDir.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "sample-project-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.staticfiles",
                  "sampleproject.shop"]
MIDDLEWARE = [
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "sampleproject.urls"
WSGI_APPLICATION = "sampleproject.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# A checkout run from source (the host's tests) has collected nothing: WhiteNoise serves no
# files there and need not say so on every start.
warnings.filterwarnings("ignore", message="No directory at: ")


def database_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, object]:
    url = env.get("DATABASE_URL")
    if url:
        parsed = urlparse(url)
        host, port = parsed.hostname or "", str(parsed.port or "")
        name, user = parsed.path.lstrip("/"), unquote(parsed.username or "")
        password = unquote(parsed.password or "")
    else:
        host = env.get("DATABASE_HOST", "127.0.0.1")
        port = env.get("DATABASE_PORT", "5432")
        name = env.get("DATABASE_NAME", "app")
        user = env.get("DATABASE_USER", "app")
        password = env.get("DATABASE_PASSWORD", "")
    options: dict[str, object] = {"connect_timeout": 5}
    # pooling.mode: django: Django's own psycopg pool, sized by the operator (docs/pooling.md).
    if env.get("DATABASE_POOL_MAX_SIZE"):
        options["pool"] = {
            "min_size": 1,
            "max_size": int(env["DATABASE_POOL_MAX_SIZE"]),
            "timeout": 30,
        }
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": host,
        "PORT": port,
        "NAME": name,
        "USER": user,
        "PASSWORD": password,
        "CONN_MAX_AGE": 0 if "pool" in options else int(env.get("DATABASE_CONN_MAX_AGE", "0")),
        # No CONN_HEALTH_CHECKS: a round trip per request; the launcher polls the socket.
        # (DATABASE_CONN_HEALTH_CHECKS=1 turns them on, for bench/bench_servers.py's contrast.)
        "CONN_HEALTH_CHECKS": env.get("DATABASE_CONN_HEALTH_CHECKS", "0") == "1",
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "OPTIONS": options,
    }


DATABASES = {"default": database_from_env()}
# What `celery beat` sends (the operator's beat pod runs it), every SAMPLEPROJECT_BEAT_SECONDS.
CELERY_BEAT_SCHEDULE = {
    "count-items": {
        "task": "sampleproject.tasks.count_items",
        "schedule": float(os.environ.get("SAMPLEPROJECT_BEAT_SECONDS", "5")),
    },
}
LOGGING = {
    "version": 1,
    # Keep django.request's errors: a 500 under load must say why.
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
