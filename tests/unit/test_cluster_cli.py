"""`djangoscale cluster ...` parses into what LocalCluster needs, without starting anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from djangoscale.cli import build_parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(list(argv)).parse_args(list(argv))


def test_up_defaults() -> None:
    args = parse("cluster", "up")
    assert (args.action, args.dir, args.nodes) == ("up", Path(".djangoscale/cluster"), 1)
    assert (args.hpa_sync_period, args.hpa_downscale_stabilization) == ("5s", "30s")


def test_up_options() -> None:
    args = parse(
        "cluster",
        "up",
        "--dir",
        "/tmp/c",
        "--nodes",
        "3",
        "--hpa-sync-period",
        "1s",
        "--hpa-downscale-stabilization",
        "2m",
    )
    assert (args.dir, args.nodes) == (Path("/tmp/c"), 3)
    assert (args.hpa_sync_period, args.hpa_downscale_stabilization) == ("1s", "2m")


def test_down_takes_a_dir_but_no_up_options() -> None:
    assert parse("cluster", "down", "--dir", "x").dir == Path("x")
    with pytest.raises(SystemExit):
        parse("cluster", "down", "--nodes", "2")


def test_an_action_is_required() -> None:
    with pytest.raises(SystemExit):
        parse("cluster")


def test_up_runs_the_real_node_unless_kwok_is_asked() -> None:
    assert parse("cluster", "up").node == "real"
    assert parse("cluster", "up", "--node", "kwok", "--nodes", "3").node == "kwok"
    with pytest.raises(SystemExit):
        parse("cluster", "up", "--node", "docker")


def test_load_takes_an_archive_and_a_dir() -> None:
    args = parse("cluster", "load", "app.oci.tar", "--dir", "c")
    assert (args.action, args.archive, args.dir) == ("load", Path("app.oci.tar"), Path("c"))
