"""``mpidispatch doctor`` lines on a plain ASCII terminal, whatever the checks found (no MPI).

The whole-command test (tests/test_doctor.py) only met a check with a fix when a scheduler
was down: then the line's dash crashed an ASCII terminal."""
import io
import sys

from mpidispatch import doctor
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


def test_a_fix_line_is_ascii_with_ascii_marks():
    check = doctor.Check(doctor.WARN, "Slurm", "`sinfo` failed", "check the controller")
    line = check.line(doctor._ASCII_MARKS)
    assert line == "!! Slurm: `sinfo` failed -- fix: check the controller"
    line.encode("ascii")
    assert "\u2014 fix:" in check.line(doctor._MARKS)


def test_quoted_output_that_ascii_cannot_show_is_replaced_not_fatal(monkeypatch):
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    doctor._print("qstat said: caf\u00e9 \u2014 down")
    out.flush()
    assert out.buffer.getvalue() == b"qstat said: caf? ? down\n"
