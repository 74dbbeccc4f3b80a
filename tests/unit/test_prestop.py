"""`djangoscale prestop`: it never fails the hook, and it waits whatever happened."""

from __future__ import annotations

import argparse
import time

from djangoscale.contract import PGBOUNCER_ADDRESS_ENV
from djangoscale.serve import prestop
from tests.unit.test_autoscaling_collector import free_port


def args(sleep: float) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prestop.configure(parser)
    return parser.parse_args(["--sleep", str(sleep)])


def test_without_pgbouncer_or_server_it_only_waits(monkeypatch, capsys):
    monkeypatch.delenv(PGBOUNCER_ADDRESS_ENV, raising=False)
    monkeypatch.setenv("DJANGOSCALE_BIND", f"127.0.0.1:{free_port()}")  # no server there
    started = time.monotonic()
    assert prestop.main(args(0.2)) == 0
    assert time.monotonic() - started >= 0.2
    err = capsys.readouterr().err
    assert "no server recorded for port" in err
    assert "pgbouncer" not in err


def test_an_unreachable_pgbouncer_is_logged_and_the_wait_still_happens(monkeypatch, capsys):
    monkeypatch.setenv(PGBOUNCER_ADDRESS_ENV, f"127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("DATABASE_USER", "shop")
    monkeypatch.setenv("DATABASE_PASSWORD", "pw")
    started = time.monotonic()
    assert prestop.main(args(0.2)) == 0
    assert time.monotonic() - started >= 0.2
    err = capsys.readouterr().err
    assert "could not shrink the pgbouncer pool" in err
    assert "pw" not in err


def test_the_deployments_hook_is_a_command_the_launcher_parses():
    from djangoscale import cli, spec
    from djangoscale.builders.deployment import PRE_STOP_SLEEP, build_deployment
    from tests.unit.test_budget_arithmetic import body_with

    ds = spec.parse(body_with())
    (app,) = build_deployment(ds, {"metadata": {"name": "shop-database"}, "data": {}})[
        "spec"]["template"]["spec"]["containers"]
    command = app["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "djangoscale"
    parsed = cli.build_parser(command[1:]).parse_args(command[1:])
    assert (parsed.handler, parsed.sleep, parsed.pool_size) == (prestop.main, PRE_STOP_SLEEP, 1)
    env = {item["name"]: item.get("value") for item in app["env"]}
    assert env[PGBOUNCER_ADDRESS_ENV] == "127.0.0.1:6432"  # where the hook finds pgbouncer
    # Without the sidecar the hook still tells the server to drain, then waits.
    external = spec.parse(body_with(pooling={"mode": "external"}))
    (app,) = build_deployment(external, {"metadata": {"name": "shop-database"}, "data": {}})[
        "spec"]["template"]["spec"]["containers"]
    assert app["lifecycle"]["preStop"]["exec"]["command"] == command
