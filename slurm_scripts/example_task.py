"""One run of an array job: every rank adds (rank + 1) * TASK; rank 0 prints the sum."""
import sys

from mpi4py import MPI

task = int(sys.argv[1]) if len(sys.argv) > 1 else 1
comm = MPI.COMM_WORLD
total = comm.allreduce((comm.rank + 1) * task)
if comm.rank == 0:
    print("task %d size %d result %d" % (task, comm.size, total), flush=True)
