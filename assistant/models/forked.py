"""Model work run in a fork of this process, for work that would otherwise stop every reply here:
torch.export traces a model for seconds while patching every module's call in all threads, so in
the app's process nothing else may run the model meanwhile. A fork starts with this process's model
in its memory (copied only where written), runs the work with this thread alone, and leaves this
process free to answer.

Only on Linux: elsewhere a fork of a process that has started system frameworks' threads is not
safe (macOS), and the caller runs the work in its own process instead.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

import torch

FORK_WORKS = sys.platform == "linux" and hasattr(os, "fork")
POLL_S = 0.05
_exiting = threading.Event()  # this process is exiting: its forks were ended


def run_forked(
    work: Callable[[], None],
    what: str,
    timeout_s: float,
    quiet: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> bool:
    """Run `work` in a fork of this process and wait for it to end; False, having run nothing, where
    this system has no safe fork. The fork is made inside `quiet` (a moment when no other thread is
    inside the model: none holds a lock of PyTorch's that the fork would find held forever, and the
    model's memory is not being written). Raises RuntimeError naming `what` where it fails or is
    still running after `timeout_s` (then it is ended)."""
    if not FORK_WORKS:
        return False
    parent = os.getpid()
    with quiet():
        child = os.fork()
        if child == 0:
            _run_in_fork(work, parent)
    # This process ending (the app stopped) ends the fork first: its work is for this process only,
    # and what this process leaves as it exits (its scratch folders) would fail it noisily.
    end_the_fork = functools.partial(_end_at_exit, child)
    atexit.register(end_the_fork)
    try:
        status = _wait(child, timeout_s)
    finally:
        atexit.unregister(end_the_fork)
    if _exiting.is_set():
        raise SystemExit(0)  # the caller's thread ends with the app, quietly (not as a failed build)
    if status is None:
        _end(child)
        raise RuntimeError(f"{what} was still running after {timeout_s:.0f} s")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{what} failed (exit status {os.waitstatus_to_exitcode(status)}; its error is above)")
    return True


def _run_in_fork(work: Callable[[], None], parent: int) -> NoReturn:
    """The fork's whole life: `work`, then an exit that runs none of the parent's exit handlers."""
    status = 1
    try:
        end_with(parent)
        # The fork has this thread only: the parent's OpenMP threads are not there, and GNU's OpenMP
        # runtime hangs in a fork that asks for them. One thread: PyTorch's kernels never do.
        torch.set_num_threads(1)
        work()
        status = 0
    except BaseException:  # noqa: BLE001 - said on stderr; the parent sees the status
        traceback.print_exc()
    finally:
        os._exit(status)


def end_with(parent: int) -> None:
    """End this process when `parent` ends (the app stopped meanwhile): minutes of work for nobody
    otherwise."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _end_at_exit(child: int) -> None:
    _exiting.set()
    _end(child)


def _end(child: int) -> None:
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def _wait(child: int, timeout_s: float) -> int | None:
    """`child`'s wait status once it ends; None if it is still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ended, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:  # ended and reaped at exit (_end_at_exit)
            return None
        if ended:
            return status
        time.sleep(POLL_S)
    return None
