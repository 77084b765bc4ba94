"""Throughput and bandwidth across hosts: the namespace hosts of .ci/hosts.sh (veth + bridge).

    sudo .venv-openmpi/bin/python bench/multihost.py [--tasks 20000] [--repeat 3]

The manager runs on h0, its workers on h1 (and h2), as a static world (``mpiexec --host``);
traffic goes over TCP through the veths and the bridge, as between real hosts (MPICH is
told to use TCP rather than shared memory, which would cross the namespaces). Rows: no-op
tasks per second (one task per message) with 1 and 2 workers on other hosts, beside the same
on one host and beside a raw mpi4py ``send``/``recv`` ping-pong (the floor); and a 100 MB
float64 array to a worker on another host and back, beside raw mpi4py ``comm.Send``/``Recv``
between the same two hosts. Starts the rig if it is not up (and stops it afterwards). Needs
root. Prints medians of ``--repeat`` runs. Measure on an otherwise idle machine.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)

from mpidispatch import _mpienv  # noqa: E402
from mpidispatch.cli import mpiexec_command  # noqa: E402

HOSTS_SH = os.path.join(ROOT, ".ci", "hosts.sh")
STATE = os.environ.get("MPIDISPATCH_HOSTS_STATE", "/run/mpidispatch-hosts")
AGENT = os.path.join(STATE, "ssh")


def environment():
    """What the runs need: the wheel's settings, and the rig's launcher and interfaces."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, ROOT, env.get("PYTHONPATH", "")])
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        env.setdefault(key, value)
    env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")
    env.update({"PRTE_MCA_plm_ssh_agent": AGENT, "PRTE_MCA_prte_if_include": "eth0",
                "OMPI_MCA_btl_tcp_if_include": "eth0", "HYDRA_LAUNCHER": "ssh",
                "HYDRA_LAUNCHER_EXEC": AGENT, "HYDRA_IFACE": "eth0",
                "UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "eth0"})
    return env


def on_h0(argv):
    """Run ``argv`` on host h0; its RESULT line as a float."""
    cmd = [AGENT, "h0", " ".join("'%s'" % a for a in argv)]
    out = subprocess.run(cmd, env=environment(), capture_output=True, text=True, timeout=300,
                         cwd=HERE)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(line.split()[1])
    raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(argv), out.stdout, out.stderr[-2000:]))


def median(fn, repeat):
    return statistics.median(fn() for _ in range(repeat))


def rig_up():
    """Start the three hosts unless they are up; True if this call started them."""
    if subprocess.run(["bash", HOSTS_SH, "status", "3"], capture_output=True).returncode == 0:
        return False
    subprocess.run(["bash", HOSTS_SH, "start", "3"], check=True, timeout=60)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bytes", type=int, default=100 * 1024 * 1024)
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/multihost.py needs root (network namespaces)")
    started = rig_up()
    try:
        run(a)
    finally:
        if started:
            subprocess.run(["bash", HOSTS_SH, "stop"], timeout=60)


def run(a):
    py = sys.executable
    md = os.path.join(HERE, "_mpidispatch_run.py")
    print("MPI wheel: %s, %d cores, manager on h0; veth TCP between hosts; median of %d"
          % (_mpienv.backend(), os.cpu_count(), a.repeat))
    print("%-60s %10s" % ("%d no-op tasks, one per message" % a.tasks, "tasks/s"))
    layouts = [("1 worker, same host (h0:2)", "h0:2", 2),
               ("1 worker on another host (h0:1,h1:1)", "h0:1,h1:1", 2),
               ("2 workers on 2 other hosts (h0:1,h1:1,h2:1)", "h0:1,h1:1,h2:1", 3)]
    for name, hosts, n in layouts:
        rate = median(lambda: on_h0(mpiexec_command(n, hosts=hosts)
                                    + [py, md, "tasks", str(a.tasks), "0"]), a.repeat)
        print("%-60s %10.0f" % (name, rate))
    for name, hosts in (("raw mpi4py send/recv ping-pong, same host (h0:2)", "h0:2"),
                        ("raw mpi4py send/recv ping-pong, h0 <-> h1", "h0:1,h1:1")):
        rate = median(lambda: on_h0(mpiexec_command(2, hosts=hosts)
                                    + [py, os.path.abspath(__file__), "--pingpong",
                                       str(a.tasks)]), a.repeat)
        print("%-60s %10.0f" % (name + ", round trips/s", rate))
    mb = a.bytes / 1e6
    print("\n%.0f MB float64 array to a worker and back (best of 3 round trips, seconds)" % mb)
    rows = [
        ("mpidispatch task, h0 -> h1 -> h0", "h0:1,h1:1",
         [py, md, "bigarray", str(a.bytes), "0"]),
        ("raw comm.Send/Recv, h0 -> h1 -> h0", "h0:1,h1:1",
         [py, os.path.join(HERE, "_raw_run.py"), str(a.bytes)]),
        ("mpidispatch task, same host (h0:2)", "h0:2",
         [py, md, "bigarray", str(a.bytes), "0"]),
        ("raw comm.Send/Recv, same host (h0:2)", "h0:2",
         [py, os.path.join(HERE, "_raw_run.py"), str(a.bytes)]),
    ]
    for name, hosts, argv in rows:
        seconds = median(lambda: on_h0(mpiexec_command(2, hosts=hosts) + argv), a.repeat)
        print("%-60s %10.3f  (%.0f MB/s each way)" % (name, seconds, 2 * mb / seconds))


def pingpong(n):
    """MPI program: ``n`` small pickled round trips between ranks 0 and 1 (the floor for
    one task per message)."""
    import time
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    for i in range(100):                      # warm up the connection
        pong(comm, i)
    t = time.perf_counter()
    for i in range(n):
        pong(comm, i)
    if comm.rank == 0:
        print("RESULT %.0f" % (n / (time.perf_counter() - t)))


def pong(comm, i):
    if comm.rank == 0:
        comm.send(i, dest=1)
        comm.recv(source=1)
    else:
        comm.send(comm.recv(source=0), dest=0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pingpong"]:
        pingpong(int(sys.argv[2]))
    else:
        main()
