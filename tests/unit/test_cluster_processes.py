"""Detached processes are recorded, recognised and stopped, and nothing else is."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from djangoscale_dev.cluster import processes

SLEEP = Path(shutil.which("sleep") or "/bin/sleep").resolve()


def test_start_records_and_stop_all_stops(tmp_path: Path) -> None:
    first = processes.start("one", SLEEP, ["60"], tmp_path)
    second = processes.start("two", SLEEP, ["60"], tmp_path)
    assert [e.name for e in processes.recorded(tmp_path)] == ["one", "two"]
    assert processes.is_ours(first) and processes.is_ours(second)
    assert os.getsid(first.pid) == first.pid  # own session: a terminal's Ctrl-C misses it

    assert processes.stop_all(tmp_path) == ["two", "one"]
    assert not processes.is_ours(first) and not processes.is_ours(second)
    assert processes.recorded(tmp_path) == []


def test_a_reused_pid_running_another_binary_is_not_ours(tmp_path: Path) -> None:
    started = processes.start("one", SLEEP, ["60"], tmp_path)
    try:
        impostor = processes.Started("one", started.pid, "/usr/bin/not-what-we-started", "")
        assert not processes.is_ours(impostor)
        assert processes.stop(impostor) is False
        assert processes.is_ours(started)  # still running: stop() refused to touch it
    finally:
        processes.stop(started)


def test_an_exited_process_is_not_ours(tmp_path: Path) -> None:
    started = processes.start("short", SLEEP, ["0"], tmp_path)
    deadline = time.monotonic() + 10
    while processes.is_ours(started) and time.monotonic() < deadline:
        processes._reap(started.pid)
        time.sleep(0.05)
    assert not processes.is_ours(started)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = processes.free_ports(6)
    assert len(set(ports)) == 6
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_log_goes_to_the_logs_folder(tmp_path: Path) -> None:
    echo = Path(shutil.which("echo") or "/bin/echo").resolve()
    started = processes.start("echo", echo, ["hello"], tmp_path)
    deadline = time.monotonic() + 5
    while "hello" not in Path(started.log).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(started.log) == tmp_path / "logs" / "echo.log"
    assert Path(started.log).read_text() == "hello\n"
    processes._reap(started.pid)


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path):
    yield
    processes.stop_all(tmp_path)
