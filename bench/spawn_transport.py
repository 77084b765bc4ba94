"""Ping-pong between a singleton and one MPI_Comm_spawn'ed process: which transport they use.

    python bench/spawn_transport.py [--bytes 8388608] [--repeat 20]

Run it with different transport settings to compare, e.g. with the Open MPI wheel:

    OMPI_MCA_pml=ucx python bench/spawn_transport.py
    OMPI_MCA_btl=self,sm,tcp python bench/spawn_transport.py

It prints the small-message round trip and the round trip of a large buffer with
``Send``/``Recv`` (median of ``--repeat``), in a static world (``--static``, run under
``mpiexec -n 2``) or across the spawn intercommunicator (default).
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.dirname(HERE))

from mpidispatch._mpienv import mpi  # noqa: E402  (sets the wheel's environment first)


def ping_pong(comm, first, nbytes, repeat):
    """Round trips of a 1-byte and an ``nbytes`` buffer; (small seconds, big seconds list)."""
    import numpy as np
    MPI = mpi()
    peer = 0 if comm.Is_inter() else 1 - comm.Get_rank()
    small = np.zeros(1, dtype=np.uint8)
    big = np.ones(nbytes, dtype=np.uint8)
    n_small = 2000
    for phase in range(2):               # phase 0 warms up
        t = time.perf_counter()
        for _ in range(n_small):
            if first:
                comm.Send([small, MPI.BYTE], dest=peer, tag=1)
                comm.Recv([small, MPI.BYTE], source=peer, tag=1)
            else:
                comm.Recv([small, MPI.BYTE], source=peer, tag=1)
                comm.Send([small, MPI.BYTE], dest=peer, tag=1)
        small_rtt = (time.perf_counter() - t) / n_small
    times = []
    for i in range(repeat + 2):
        t = time.perf_counter()
        if first:
            comm.Send([big, MPI.BYTE], dest=peer, tag=2)
            comm.Recv([big, MPI.BYTE], source=peer, tag=2)
        else:
            comm.Recv([big, MPI.BYTE], source=peer, tag=2)
            comm.Send([big, MPI.BYTE], dest=peer, tag=2)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return small_rtt, times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", type=int, default=8 << 20)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--static", action="store_true", help="two ranks of one mpiexec world")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    t0 = time.perf_counter()
    MPI = mpi()
    t_init = time.perf_counter() - t0
    t_spawn = 0.0
    if a.static:
        comm = MPI.COMM_WORLD
        first = comm.Get_rank() == 0
    elif a.child:
        comm, first = MPI.Comm.Get_parent(), False
    else:
        comm = MPI.COMM_SELF.Spawn(sys.executable, [os.path.abspath(__file__), "--child",
                                                    "--bytes", str(a.bytes),
                                                    "--repeat", str(a.repeat)], maxprocs=1)
        first = True
    t_spawn = time.perf_counter() - t0 - t_init
    small, times = ping_pong(comm, first, a.bytes, a.repeat)
    if first:
        med = statistics.median(times)
        print("RESULT %s small_rtt_us=%.1f big_rtt_ms=%.2f GiB/s=%.2f init_s=%.2f spawn_s=%.2f "
              "bytes=%d settings=%s" % (
                  "static" if a.static else "spawned", small * 1e6, med * 1e3,
                  2 * a.bytes / med / 2 ** 30, t_init, t_spawn, a.bytes,
                  " ".join("%s=%s" % (k, v) for k, v in sorted(os.environ.items())
                           if k.startswith(("OMPI_MCA_", "UCX_", "FI_")))))
    if not a.static:
        comm.Disconnect()


if __name__ == "__main__":
    main()
