"""Raw mpi4py: a 100 MB float64 array to rank 1 and back with comm.Send/Recv (best of 3)."""
import sys
import time

import numpy as np
from mpi4py import MPI

n = int(sys.argv[1]) // 8
comm = MPI.COMM_WORLD
a = np.random.default_rng(0).random(n)
b = np.empty_like(a)
best = 1e9
for _ in range(3):
    comm.Barrier()
    t = time.perf_counter()
    if comm.rank == 0:
        comm.Send(a, dest=1)
        comm.Recv(b, source=1)
        best = min(best, time.perf_counter() - t)
    else:
        comm.Recv(b, source=0)
        comm.Send(b, dest=0)
if comm.rank == 0:
    assert np.array_equal(a, b)
    print("RESULT %.4f" % best)
