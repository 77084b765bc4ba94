"""A job's worker list drives the engine: appending adds workers, deleting stops them."""
import os
import threading

from mpidispatch import LocalWorker, NoMoreWorkersError, SerializationError
from mpidispatch.modeller import job, task


class Square(task):
    def run(self, x):
        return x * x, os.getpid()


j = job()
j.queue_task(Square(1))
try:
    j.run_all_tasks()
except NoMoreWorkersError as err:
    print("EMPTY", type(err).__name__)
j.append(LocalWorker())
j.extend([LocalWorker()])
for i in range(6):
    j.queue_task(Square(i))
print("AFTER_APPEND", [r[0] for r in j.run_all_tasks(progress=True)])
gone = j[0]
del j[0]
for i in range(6):
    j.queue_task(Square(i))
print("PIDS_AFTER_DEL", len({r[1] for r in j.yield_tasks_unordered()}))
print("STOPPED", gone.state)
try:
    j.queue_task(object())
except TypeError as err:
    print("BAD_TASK", type(err).__name__)


class Holds(task):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def run(self):
        return 1


try:
    j.queue_task(Holds())
except SerializationError as err:
    print("UNPICKLABLE", type(err).__name__)
