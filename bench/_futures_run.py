"""mpi4py.futures: 20,000 no-op tasks, one task per message (run under -m mpi4py.futures)."""
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _tasks import noop  # noqa: E402

from mpi4py.futures import MPIPoolExecutor  # noqa: E402

if __name__ == "__main__":   # mpi4py.futures imports this module on its workers
    n = int(sys.argv[1])
    with MPIPoolExecutor() as ex:
        list(ex.map(noop, range(10)))
        t = time.perf_counter()
        count = sum(1 for _ in ex.map(noop, range(n), chunksize=1))
        dt = time.perf_counter() - t
    assert count == n
    print("RESULT %.0f" % (n / dt))
