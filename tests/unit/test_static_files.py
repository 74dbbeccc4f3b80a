"""spec.staticFiles: collectstatic into an emptyDir at pod start; off by default."""

from __future__ import annotations

import copy

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.static_files import STATIC_ROOT_ENV
from tests.unit.test_workers_builders import SHOP


def deployments(**fields):
    body = copy.deepcopy(SHOP)
    body["spec"].update(fields)
    return {c["metadata"]["name"]: c for c in build_children(spec.parse(body))
            if c["kind"] == "Deployment"}


def test_off_by_default_the_image_carries_its_static_files():
    pod = deployments()["shop"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["pgbouncer"]
    assert STATIC_ROOT_ENV not in {e["name"] for e in pod["containers"][0]["env"]}


def test_collected_into_an_emptydir_the_app_reads_read_only():
    env = [{"name": STATIC_ROOT_ENV, "value": "/somewhere/else"},
           {"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"}]
    built = deployments(staticFiles={"enabled": True, "mountPath": "/srv/static"}, env=env)
    pod = built["shop"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["pgbouncer", "collectstatic"]
    collector = pod["initContainers"][1]
    assert collector["command"] == ["python", "manage.py", "collectstatic", "--noinput"]
    assert collector["securityContext"]["readOnlyRootFilesystem"]
    app = pod["containers"][0]
    for container in (collector, app):
        values = [e["value"] for e in container["env"] if e["name"] == STATIC_ROOT_ENV]
        assert values == ["/srv/static"]  # the mount path wins over spec.env
        assert "DJANGO_SETTINGS_MODULE" in {e["name"] for e in container["env"]}
    assert {"name": "static", "mountPath": "/srv/static", "readOnly": True} in app["volumeMounts"]
    assert {"name": "static", "emptyDir": {}} in pod["volumes"]
    # Only the web pods: workers serve no static files.
    worker = built["shop-worker-default"]["spec"]["template"]["spec"]
    assert "collectstatic" not in [c["name"] for c in worker.get("initContainers", [])]


def test_app_base_gives_app_to_its_user_so_collectstatic_runs_at_build():
    """The default way collects at image build time as the image's user, into /app
    (docker/sampleapp/Dockerfile does): /app must be that user's, not root's."""
    from pathlib import Path

    lines = (Path(__file__).parents[2] / "docker/app-base/Dockerfile").read_text().splitlines()
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    chown = next(i for i, line in enumerate(lines) if line.startswith("RUN ")
                 and f"chown {user} /app" in line)
    workdir = lines.index("WORKDIR /app")
    assert chown < workdir  # made before WORKDIR would make it root's
    sample = (Path(__file__).parents[2] / "docker/sampleapp/Dockerfile").read_text()
    assert "manage.py collectstatic --noinput" in sample
