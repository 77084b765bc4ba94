"""Progress bars and end summaries, shared by the faces (_progress.py): the IMP context's
get_results / get_results_unordered(progress=True), and the summary of a "long" run."""
import sys

from mpidispatch import LocalWorker, Manager


def double(x):
    return 2 * x


class Double:
    def __init__(self, x):
        self.x = x

    def __call__(self):
        return 2 * self.x


m = Manager()
m.add_worker(LocalWorker())
c = m.get_context()
for i in range(7):
    c.add_task(Double(i))
print("ORDERED", c.get_results(progress=True))
sys.stderr.write("--- unordered\n")
for i in range(5):
    c.add_task(Double(i))
it = c.get_results_unordered(progress=True)
first = next(it)
for i in range(3):                      # tasks added while iterating count too
    c.add_task(Double(i))
print("UNORDERED", sorted([first] + list(it)))
sys.stderr.write("--- quiet\n")
c.add_task(Double(1))
print("QUIET", c.get_results())        # no bar; summary only if MPIDISPATCH_SUMMARY_AFTER is 0
