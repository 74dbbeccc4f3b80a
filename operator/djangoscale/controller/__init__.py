"""The operator's entry module: importing it registers every handler (`kopf run -m ...`)."""

from djangoscale.autoscaling import handlers as autoscaling
from djangoscale.celery import handlers as celery
from djangoscale.controller import handlers, settings

__all__ = ["autoscaling", "celery", "handlers", "settings"]
