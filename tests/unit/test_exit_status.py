"""The exit status a worker's shell wrapper writes to its log: signals versus large statuses."""
import signal

import pytest

from mpidispatch.workers import describe_exit, exit_status_from_log
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)

MARKER = "mpidispatch: worker process ended with exit status %d\n"


@pytest.mark.parametrize("status,code,words", [
    (0, 0, "exit status 0"),
    (3, 3, "exit status 3"),
    (137, -9, "killed by SIGKILL"),
    (128 + signal.NSIG - 1, -(signal.NSIG - 1), "killed by SIGRTMAX"),
    (195, 195, "exit status 195"),       # Open MPI's runtime ending a spawn-mate: no signal 67
    (255, 255, "exit status 255"),
])
def test_status_from_the_wrapper(tmp_path, status, code, words):
    log = tmp_path / "worker0.log"
    log.write_text("some output\n" + MARKER % status)
    assert exit_status_from_log(str(log), wait=0) == code
    assert describe_exit(code) == words


def test_no_status_yet_is_unknown(tmp_path):
    log = tmp_path / "worker0.log"
    log.write_text("still running\n")
    assert exit_status_from_log(str(log), wait=0) is None
    assert describe_exit(None) == "exit status unknown"
