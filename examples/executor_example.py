"""MPIExecutor: a concurrent.futures executor whose workers are MPI processes.

    python examples/executor_example.py 2                     # 2 spawned workers
    python -m mpidispatch -n 3 examples/executor_example.py   # 2 mpiexec ranks
"""
import concurrent.futures as cf
import sys

from mpidispatch.executor import MPIExecutor


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def check_positive(n):
    if n <= 0:
        raise ValueError("%d is not positive" % n)
    return n


if __name__ == "__main__":
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else None
    with MPIExecutor(max_workers=workers) as ex:
        # map: lazy, ordered; chunksize groups many small calls into one task
        longest = max(zip(ex.map(collatz_steps, range(1, 20001), chunksize=500,
                                 progress=True), range(1, 20001)))
        print("longest Collatz chain below 20001: %d steps from %d" % longest)
        # submit + as_completed; a task's exception comes back as its own type
        futures = {ex.submit(check_positive, n): n for n in (3, -1, 7)}
        for future in cf.as_completed(futures):
            try:
                print(futures[future], "->", future.result())
            except ValueError as err:
                print(futures[future], "-> ValueError:", err)
                print("   remote traceback ends with:",
                      str(err.__cause__).strip().splitlines()[-1])
