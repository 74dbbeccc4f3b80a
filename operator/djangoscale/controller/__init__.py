"""The operator's entry module: importing it registers every handler (`kopf run -m ...`)."""

from djangoscale.controller import handlers, settings

__all__ = ["handlers", "settings"]
