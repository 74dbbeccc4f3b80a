"""The sample project's Celery app, as a Django project usually declares it.

The broker comes from CELERY_BROKER_URL (Celery reads it from the environment; the operator sets
it from the broker Secret). `djangoscale worker -A sampleproject.celery` runs it.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")

app = Celery("sampleproject", include=["sampleproject.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
