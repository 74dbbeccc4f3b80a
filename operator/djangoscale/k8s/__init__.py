"""The one Kubernetes API layer: a table of kinds to paths (`kinds`) and the calls (`api`).

The operator, `tests/tools/chart_install.py` and the tests reach the API server through it;
nothing else imports the kubernetes client.
"""

from djangoscale.k8s.api import Api, ApiError, KubernetesApi
from djangoscale.k8s.events import warn
from djangoscale.k8s.kinds import KINDS, Kind, collection_path, object_path

__all__ = ["KINDS", "Api", "ApiError", "Kind", "KubernetesApi", "collection_path", "object_path",
           "warn"]
