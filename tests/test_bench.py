"""The bench command's own logic (no MPI run: the figures themselves live in docs/)."""
import pytest

from mpidispatch import bench


def test_worker_counts_double_up_to_the_top():
    assert bench.worker_counts(1) == [1]
    assert bench.worker_counts(16) == [1, 2, 4, 8, 16]
    assert bench.worker_counts(12) == [1, 2, 4, 8, 12]
    assert bench.worker_counts(128)[-2:] == [64, 128]


@pytest.mark.parametrize("argv, message", [
    (["--scaling", "--kinds", "no-op,huge"], "unknown task kind"),
    (["--workers", "0"], "must be >= 1"),
    (["--repeat", "0"], "must be >= 1"),
])
def test_bad_options_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_task_functions_pickle_by_reference():
    import pickle
    for fn in (bench.noop, bench.echo, bench.nbytes, bench.sleep_task):
        assert bench.__name__.encode() in pickle.dumps(fn)
