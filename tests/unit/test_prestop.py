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


def test_without_pgbouncer_it_only_waits(monkeypatch, capsys):
    monkeypatch.delenv(PGBOUNCER_ADDRESS_ENV, raising=False)
    started = time.monotonic()
    assert prestop.main(args(0.2)) == 0
    assert time.monotonic() - started >= 0.2
    assert "no pgbouncer in this pod" in capsys.readouterr().err


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
