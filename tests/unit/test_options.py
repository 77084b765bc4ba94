"""Options: keyword, then MPIDISPATCH_* environment, then the face's default, then ours."""
import pytest

from mpidispatch._options import ENVIRONMENT, Options, resolve
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


def test_defaults():
    o = resolve()
    assert o == Options()
    assert o.prefetch == 2 and o.max_retries == 3 and o.task_timeout is None


def test_keyword_beats_environment_beats_face_default(monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_PREFETCH", "5")
    assert resolve({"prefetch": 1}).prefetch == 5
    assert resolve({"prefetch": 1}, prefetch=3).prefetch == 3
    monkeypatch.delenv("MPIDISPATCH_PREFETCH")
    assert resolve({"prefetch": 1}).prefetch == 1


def test_none_means_not_given(monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_START_TIMEOUT", "7")
    assert resolve(start_timeout=None).start_timeout == 7.0


def test_unknown_option_is_a_type_error_naming_the_known_ones():
    with pytest.raises(TypeError, match="unknown option workers.*prefetch"):
        resolve(workers=3)


@pytest.mark.parametrize("bad", [
    {"task_timeout": -1}, {"task_timeout": 0}, {"prefetch": 0}, {"prefetch": 1.5},
    {"max_retries": -1}, {"start_timeout": "x"}, {"respawn_budget": -2},
    {"output": "workers.log"}, {"heartbeat_timeout": 0},
])
def test_bad_values_fail_at_the_call(bad):
    with pytest.raises((TypeError, ValueError)):
        resolve(**bad)


def test_output_without_percent_d_says_what_is_expected():
    with pytest.raises(ValueError, match="must contain one %d"):
        resolve(output="workers.log")


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_MAX_RETRIES", "many")
    with pytest.raises(ValueError, match="MPIDISPATCH_MAX_RETRIES"):
        resolve()


def test_every_environment_option_is_documented():
    from mpidispatch._options import _FROM_ENV
    for name in _FROM_ENV:
        assert "MPIDISPATCH_" + name.upper() in ENVIRONMENT
