"""`djangoscale serve`: the launcher that runs inside the user's Django image.

It exists so that every pod runs its WSGI server the same way whatever the server type:
the same database hygiene, the same metrics names (which the operator's autoscaler reads),
the same health endpoints and the same graceful drain. Nothing here imports kopf or the
Kubernetes client, and module-level imports stay light: each server is imported only when
it is the one being run.
"""
