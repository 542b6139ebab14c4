"""What a long-running StreamQL process (the federation, an edge daemon, a simulated fleet) asks of
its operating system: enough open files for its sockets, and an exit that happens even when a
graceful stop does not finish (a thread stuck inside numpy, a peer that never answers a close)."""
from __future__ import annotations

import faulthandler
import logging
import os
import resource
import signal
import sys
import threading

__all__ = ["raise_open_file_limit", "hard_exit_after", "die_with_parent"]


def raise_open_file_limit(log: logging.Logger) -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (every connected edge holds a socket, and 10,000 edges
    need more than the usual soft 1,024); returns (soft, hard) in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def hard_exit_after(seconds: float, code: int, log: logging.Logger, *, dump_threads: bool = False) -> threading.Timer:
    """A daemon timer that ends the process `seconds` from now, flushing the logs first; with
    `dump_threads`, every thread's stack goes to stderr before (what the stop waited for)."""
    def hard_exit() -> None:
        log.error("did not stop within %.1f s: exiting now%s", seconds, "; where every thread was:" if dump_threads else "")
        if dump_threads:
            try:
                faulthandler.dump_traceback(all_threads=True)
            except Exception:  # noqa: BLE001 - exiting regardless
                pass
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - exiting regardless
                pass
        os._exit(code)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()
    return timer


def die_with_parent() -> None:
    """In a child (a `preexec_fn`): be sent SIGTERM when the parent goes away, however it ends, so a
    killed test run or simulator leaves no orphans (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
