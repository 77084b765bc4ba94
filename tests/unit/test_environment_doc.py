"""Every MPIDISPATCH_* variable the package reads is in the table of docs/index.md, and the
table names no variable that nothing reads (no MPI)."""
import re
from pathlib import Path

from mpidispatch._options import ENVIRONMENT
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
#: Set by mpidispatch itself for the processes it starts, not by users.
INTERNAL = {"MPIDISPATCH_LAUNCHER", "MPIDISPATCH_RUN_DIR"}


def variables_read():
    found = set(ENVIRONMENT)
    for path in (ROOT / "mpidispatch").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"MPIDISPATCH_[A-Z][A-Z_]*[A-Z]", text))
        found |= {"MPIDISPATCH_" + name for name in
                  re.findall(r"\benv_(?:get|float|bool|int)\(\s*\"([A-Z_]+)\"", text)}
    return found - INTERNAL


def variables_documented():
    text = (ROOT / "docs" / "index.md").read_text()
    table = text.split("### Environment variables", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"MPIDISPATCH_[A-Z][A-Z_]*[A-Z]", table))


def test_every_variable_read_is_documented():
    assert sorted(variables_read() - variables_documented()) == []


def test_every_documented_variable_is_read():
    assert sorted(variables_documented() - variables_read()) == []
