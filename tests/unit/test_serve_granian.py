"""granian workers: a stop signal the kernel delivers to another thread still stops them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

# The shape of a granian worker: the main thread sleeps on an Event that only its Python
# SIGTERM handler sets, while another thread gets the signal (pthread_kill aims it there,
# as the kernel may). The event is set within the wait, or the wait ran out first.
WORKER = """
import signal, sys, threading, time
from djangoscale.serve.servers.granian import forward_stop_signals_to_main_thread
if sys.argv[1] == "forward":
    forward_stop_signals_to_main_thread()
stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())
main = threading.get_native_id()

def signal_once_the_main_thread_sleeps():
    # Slept first: with the GIL let go, the main thread gets to its wait and blocks there.
    time.sleep(0.05)
    while "futex" not in open(f"/proc/self/task/{main}/wchan").read():
        time.sleep(0.05)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=signal_once_the_main_thread_sleeps).start()
print(stopped.wait(timeout=float(sys.argv[2])))
"""


def handled_while_the_main_thread_waits(mode: str, wait_seconds: float) -> bool:
    done = subprocess.run([sys.executable, "-c", WORKER, mode, str(wait_seconds)],
                          env={"PYTHONPATH": str(OPERATOR)}, capture_output=True, text=True,
                          timeout=wait_seconds + 30, check=True)
    return done.stdout.strip() == "True"


def test_a_sigterm_on_another_thread_wakes_the_main_thread():
    assert handled_while_the_main_thread_waits("forward", wait_seconds=30)


def test_without_forwarding_the_main_thread_sleeps_through_it():
    """What the forwarding fixes: Python runs the handler only once the wait has run out."""
    assert not handled_while_the_main_thread_waits("plain", wait_seconds=2)
