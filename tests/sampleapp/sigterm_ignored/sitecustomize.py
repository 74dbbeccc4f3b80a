"""On PYTHONPATH, this makes every Python process of a container ignore SIGTERM: an app that
stays for its pod's whole grace period, until the kubelet's SIGKILL (tests of the connection
budget while such a pod terminates).

SIGTERM is blocked, not set to SIG_IGN: the launcher installs its own SIGTERM handler, which
replaces SIG_IGN (the pod then drains and exits as usual), but no handler unblocks a signal,
and every thread started later inherits the mask. The preStop hook's drain signal (SIGUSR1)
still arrives.
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
