"""Flags, environment variables and defaults of `djangoscale serve`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from djangoscale.serve.config import (
    ENV_VARS,
    Address,
    ConfigError,
    configure_parser,
    parse_address,
    resolve,
)


def parse(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return resolve(parser.parse_args(argv), env or {})


def test_defaults():
    config = parse(["app.wsgi:application"])
    assert config.server == "cherrypy"
    assert config.threads == 10 and config.max_threads == 10
    assert config.bind == Address("0.0.0.0", 8000)


def test_environment_is_read_under_the_names_the_deployment_sets():
    env = {
        "DJANGOSCALE_SERVER": "gunicorn-gthread",
        "DJANGOSCALE_WORKERS": "3",
        "DJANGOSCALE_THREADS": "100",
        "DJANGOSCALE_MAX_THREADS": "150",
        "DJANGOSCALE_QUEUE_SIZE": "1000",
        "DJANGOSCALE_TIMEOUT": "45",
        "DJANGOSCALE_BIND": "127.0.0.1:9000",
        "DJANGOSCALE_METRICS_BIND": "127.0.0.1:9101",
    }
    assert set(env) == set(ENV_VARS.values())
    config = parse(["app.wsgi:application"], env)
    assert (config.server, config.workers, config.threads, config.max_threads) == (
        "gunicorn-gthread", 3, 100, 150)
    assert (config.queue_size, config.timeout) == (1000, 45.0)
    assert config.bind == Address("127.0.0.1", 9000)
    assert config.metrics_bind == Address("127.0.0.1", 9101)


def test_flags_win_over_environment():
    config = parse(["a:b", "--threads", "7", "--server", "waitress"],
                   {"DJANGOSCALE_THREADS": "100", "DJANGOSCALE_SERVER": "granian"})
    assert (config.threads, config.server) == (7, "waitress")


@pytest.mark.parametrize(
    "argv, env",
    [
        (["a:b", "--threads", "10", "--max-threads", "5"], {}),
        (["a:b"], {"DJANGOSCALE_SERVER": "uwsgi"}),
        (["a:b"], {"DJANGOSCALE_WORKERS": "many"}),
        (["a:b", "--timeout", "0"], {}),
        (["not-a-target"], {}),
        (["a:b", "--bind", "localhost"], {}),
    ],
)
def test_invalid_values_are_refused(argv, env):
    with pytest.raises(ConfigError):
        parse(argv, env)


def test_metrics_can_be_turned_off():
    assert parse(["a:b", "--metrics-bind", "off"]).metrics_bind is None


def test_parse_address_ipv6():
    assert parse_address("[::1]:8000") == Address("::1", 8000)


@pytest.mark.parametrize(
    "server, expected", [("gunicorn-sync", 4), ("bjoern", 4), ("gunicorn-gthread", 40),
                         ("cherrypy", 60), ("waitress", 60), ("granian", 40)],
)
def test_max_concurrency_bounds_database_connections(server, expected):
    config = parse(["a:b", "--server", server, "--workers", "4", "--threads", "10",
                    "--max-threads", "15" if server in ("cherrypy", "waitress") else "10"])
    assert config.max_concurrency == expected


def test_building_the_serve_parser_imports_no_server_nor_operator():
    # A fresh interpreter: other tests in this session may have imported kopf already.
    code = (
        "import sys; from djangoscale import cli; cli.build_parser(['serve', 'a:b']); "
        "print(','.join(sorted({'kopf', 'kubernetes', 'cheroot', 'gunicorn', 'granian'} "
        "& set(sys.modules))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
