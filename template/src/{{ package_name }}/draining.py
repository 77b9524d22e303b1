"""Graceful drain: on SIGTERM the server first fails readiness, then stops accepting.

An orchestrator sends SIGTERM as it starts taking the pod out of its endpoints, and connections
still arrive until every proxy has caught up: gunicorn alone would refuse them. Here the master
serves on for DRAIN_SECONDS while /ready answers 503, then shuts down as gunicorn always does.
"""

import mmap
import signal
import threading
from typing import Any

# One byte of memory shared with every worker gunicorn forks after this is created (an
# anonymous shared mapping, no file): the master sets it, the workers' /ready reads it.
_flag: mmap.mmap | None = None


def is_draining() -> bool:
    """True once the server this process belongs to has been asked to stop."""
    return _flag is not None and _flag[0] == 1


def drain_on_sigterm(arbiter: Any, seconds: float) -> None:
    """Make the gunicorn master drain for `seconds` on its first SIGTERM; called before it forks
    any worker. A second SIGTERM or the window's end stops it, as SIGINT and SIGQUIT do at once."""
    global _flag  # set once, in the master, before the workers fork
    flag = _flag = mmap.mmap(-1, 1)
    stop = arbiter.handle_term  # raises StopIteration: gunicorn's graceful shutdown

    def handle_term() -> None:
        if seconds <= 0 or flag[0] == 1:
            stop()
        flag[0] = 1
        arbiter.log.info("draining: /ready answers 503 for %g s, then shutting down", seconds)
        # The master's loop handles signals it queues, so the end of the window is a second
        # SIGTERM put in that queue; a timer thread keeps the loop free to manage the workers.
        timer = threading.Timer(seconds, arbiter.signal, args=(signal.SIGTERM, None))
        timer.daemon = True
        timer.start()

    arbiter.handle_term = handle_term
