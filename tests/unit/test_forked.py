"""Work run in a fork of the process (models/forked.py): it runs there and not here, its failure and
its hang are reported here in one line, and it is forked while `quiet` holds."""

import os
import subprocess
import sys
import threading
import time

import pytest

from assistant.models import forked

pytestmark = pytest.mark.skipif(not forked.FORK_WORKS, reason="fork is used on Linux only")


def test_the_work_runs_in_a_fork_and_is_waited_for(tmp_path):
    seen = tmp_path / "seen"

    def work():
        time.sleep(0.3)
        seen.write_text(str(os.getpid()))

    assert forked.run_forked(work, "writing", timeout_s=60)
    assert int(seen.read_text()) != os.getpid(), "in another process, and finished when the call returns"


def test_a_failing_work_is_reported_by_name(tmp_path):
    def work():
        raise ValueError("no such layer")

    with pytest.raises(RuntimeError, match="exporting step-1x1024 failed"):
        forked.run_forked(work, "exporting step-1x1024", timeout_s=60)


def test_a_work_still_running_after_the_time_out_is_ended(tmp_path):
    pid_file = tmp_path / "pid"

    def work():
        pid_file.write_text(str(os.getpid()))
        time.sleep(120)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="still running after 1 s"):
        forked.run_forked(work, "exporting", timeout_s=1)
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_the_fork_is_made_while_quiet_holds(tmp_path):
    lock, held = threading.Lock(), tmp_path / "held"

    def work():
        held.write_text(str(lock.locked()))

    assert forked.run_forked(work, "noting", timeout_s=60, quiet=lambda: lock)
    assert held.read_text() == "True", "the lock was held when the fork was made"
    assert not lock.locked(), "and given back after"


def test_without_fork_nothing_runs_and_the_caller_is_told(monkeypatch):
    monkeypatch.setattr(forked, "FORK_WORKS", False)
    ran = []
    assert forked.run_forked(lambda: ran.append(1), "anything", timeout_s=1) is False
    assert ran == []


def test_a_fork_ends_quietly_with_the_app_that_made_it(tmp_path):
    """An app stopped during a first start's export: the fork ends with it, before the app's exit
    removes the scratch folder the export writes to (which failed it, with a traceback on the console
    after the app's last line)."""
    pid_file = tmp_path / "fork"
    script = (
        "import threading, time, sys, os\n"
        "from assistant.models import forked\n"
        "def work():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(3)\n"
        "    raise RuntimeError('the scratch folder is gone')\n"
        "threading.Thread(target=forked.run_forked, args=(work, 'exporting', 60), daemon=True).start()\n"
        "time.sleep(1)\n"
        "print('closing server', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr.strip().splitlines()[-1] == "closing server", done.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
