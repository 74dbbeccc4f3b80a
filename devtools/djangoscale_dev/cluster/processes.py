"""Start the control-plane processes detached, remember them, and stop exactly those.

`cluster up` returns while the processes keep running, so their pids live in a file in the
cluster directory. `cluster down` stops only a pid whose command line still names the binary
it was started from: a pid reused by an unrelated process after a reboot is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PIDS_FILE = "processes.json"


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    binary: str
    log: str


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open together so none is handed out twice."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start(name: str, binary: Path, args: list[str], directory: Path) -> Started:
    """Start `binary args` in its own session (so Ctrl-C in the caller's terminal does not
    reach it), output to `<directory>/logs/<name>.log`, and record its pid."""
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(binary), *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Started(name, proc.pid, str(binary), str(log_path))
    _record(directory, started)
    return started


def _record(directory: Path, started: Started) -> None:
    entries = [e for e in recorded(directory) if e.name != started.name]
    entries.append(started)
    (directory / PIDS_FILE).write_text(json.dumps([asdict(e) for e in entries], indent=2))


def recorded(directory: Path) -> list[Started]:
    path = directory / PIDS_FILE
    if not path.is_file():
        return []
    return [Started(**entry) for entry in json.loads(path.read_text())]


def is_ours(entry: Started) -> bool:
    """True while `entry.pid` is alive (not a zombie) and runs `entry.binary`.

    Reads /proc/<pid>/exe, which is fixed at exec time, rather than the command line, which
    reads empty for a moment while a process is being exec'd and would make a just-started
    process look gone.
    """
    try:
        exe = os.readlink(f"/proc/{entry.pid}/exe")
    except OSError:  # no such process, or a zombie (its exe link is gone)
        return False
    exe = exe.removesuffix(" (deleted)")  # the cache entry was rebuilt under it
    return exe == os.path.realpath(entry.binary)


def stop(entry: Started, timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True if the process was ours and running."""
    if not is_ours(entry):
        return False
    try:
        os.kill(entry.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(entry.pid)
        if not is_ours(entry):
            return True
        time.sleep(0.1)
    try:
        os.kill(entry.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        _reap(entry.pid)
        if not is_ours(entry):
            break
        time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child (started by this Python process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_all(directory: Path) -> list[str]:
    """Stop every recorded process, newest first (KWOK before the apiserver before etcd)."""
    stopped = []
    for entry in reversed(recorded(directory)):
        if stop(entry):
            stopped.append(entry.name)
    path = directory / PIDS_FILE
    if path.exists():
        path.unlink()
    return stopped
