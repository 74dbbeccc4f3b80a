"""Reconciling DjangoServices: the kopf handlers (`handlers`), the service they call
(`reconcile`), the status it reports (`status`) and `djangoscale run` (`cli`).

The entry module that registers every handler is `djangoscale.entry`.
"""
