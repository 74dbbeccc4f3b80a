"""Static files collected when a web pod starts, for images that did not collect them at build.

The pods run with a read-only root filesystem, so `collectstatic` cannot write into the image
at run time. The default is therefore to collect at image build time (the files are then part
of the image, read-only is fine) and serve them with WhiteNoise. `spec.staticFiles` is the
other way: an init container runs the command with STATIC_ROOT on an emptyDir, and the app
container mounts that emptyDir read-only at the same path with the same STATIC_ROOT.
Only the web pods: Celery workers and beat serve no static files.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from djangoscale.builders.deployment import (
    app_env_from_and_resources,
    restricted_container_security,
    with_user_env,
)
from djangoscale.spec import DjangoService

# Django's settings read it: STATIC_ROOT = os.environ.get("STATIC_ROOT", ...).
STATIC_ROOT_ENV: Final = "STATIC_ROOT"
VOLUME: Final = "static"
CONTAINER_NAME: Final = "collectstatic"


def with_static_files(ds: DjangoService, deployment: dict[str, Any]) -> dict[str, Any]:
    """The web Deployment with the collectstatic init container and the shared emptyDir."""
    if not ds.static_files.enabled:
        return deployment
    result = copy.deepcopy(deployment)
    pod = result["spec"]["template"]["spec"]
    path = ds.static_files.mount_path
    env = {"name": STATIC_ROOT_ENV, "value": path}
    collector: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": ds.image,
        "imagePullPolicy": ds.image_pull_policy,
        "command": list(ds.static_files.command),
        # The mount path decides STATIC_ROOT, whatever spec.env says, for both containers.
        "env": [item for item in with_user_env(ds, []) if item["name"] != STATIC_ROOT_ENV]
        + [env],
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": VOLUME, "mountPath": path},
                         {"name": "tmp", "mountPath": "/tmp"}],
        **app_env_from_and_resources(ds),
    }
    # After the pgbouncer sidecar: collectstatic needs no database, the sidecar starts anyway.
    pod["initContainers"] = [*pod.get("initContainers", []), collector]
    pod["volumes"] = [*pod["volumes"], {"name": VOLUME, "emptyDir": {}}]
    app = pod["containers"][0]
    app["env"] = [item for item in app["env"] if item["name"] != STATIC_ROOT_ENV] + [env]
    app["volumeMounts"] = [*app["volumeMounts"],
                           {"name": VOLUME, "mountPath": path, "readOnly": True}]
    return result
