"""Opt-in progress bars and the one-line end-of-run summary, shared by every face.

A face wraps its result loop in :class:`Progress` (``progress=True``): a tqdm bar when tqdm
is installed (the ``progress`` extra), else one plain line on stderr rewritten in place.
:class:`RunStats` counts what one run did (tasks per worker, wall time) so that the summary
describes that run, not the engine's whole life. The summary is printed when a progress bar
was asked for, or when the run took at least ``MPIDISPATCH_SUMMARY_AFTER`` seconds (default
60; ``inf`` turns it off), because that is when one wants to know how the work was spread.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from ._util import env_float


class Progress:
    """A progress bar, or nothing when ``enabled`` is False.

    Args:
        enabled: False makes every method a no-op (the default of every face).
        total: number of results expected (None: unknown, a counter is shown).
        desc: a few words in front of the bar.
        stream: where to draw it (default: ``sys.stderr``).
    """

    def __init__(self, enabled: bool, total: Optional[int] = None, desc: str = "tasks",
                 stream: Optional[TextIO] = None) -> None:
        self.enabled = bool(enabled)
        self.total = total
        self.desc = desc
        self.count = 0
        self._stream = stream or sys.stderr
        self._bar: Any = None
        self._last_draw = 0.0
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._draw()
        else:
            self._bar = tqdm(total=total, desc=desc, file=self._stream, unit="task",
                             dynamic_ncols=True, leave=True)

    def add_total(self, n: int) -> None:
        """More results are expected than announced (tasks added while running)."""
        if not self.enabled or n <= 0:
            return
        self.total = (self.total or 0) + n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        """``n`` more results arrived."""
        self.count += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_draw > 0.2 or self.count == self.total:
            self._draw()

    def close(self) -> None:
        """Finish the bar (leaves it on screen)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._bar is not None:
            self._bar.close()
        else:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        of = "/%d" % self.total if self.total is not None else ""
        self._stream.write("\r%s: %d%s" % (self.desc, self.count, of))
        self._stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RunStats:
    """What one run did, for the summary line: counts tasks per worker since ``start``.

    Args:
        engine: the engine whose workers are counted (None: a run without workers).
    """

    def __init__(self, engine: Any = None) -> None:
        self.engine = engine
        self.started = time.monotonic()
        self.local_tasks = 0
        self._before: Dict[int, int] = {}
        if engine is not None:
            self._before = {id(w): w.tasks_done for w in engine.workers}

    def per_worker(self) -> List[int]:
        """Tasks each worker of the engine finished during this run."""
        if self.engine is None:
            return []
        return [w.tasks_done - self._before.get(id(w), 0) for w in self.engine.workers]

    def line(self, what: str = "mpidispatch") -> str:
        """One line: tasks, workers, wall time, tasks per worker."""
        seconds = time.monotonic() - self.started
        per = self.per_worker()
        tasks = sum(per) + self.local_tasks
        text = "%s: %d tasks on %d workers in %.2f s" % (what, tasks, len(per), seconds)
        if per:
            text += " (%s per worker)" % ", ".join(str(n) for n in per)
        if self.local_tasks:
            text += ", %d run locally" % self.local_tasks
        return text

    def report(self, progress_shown: bool, what: str = "mpidispatch",
               stream: Optional[TextIO] = None) -> None:
        """Print :meth:`line` to stderr if a bar was shown or the run was long."""
        long_run = time.monotonic() - self.started >= env_float("SUMMARY_AFTER", 60.0)
        if progress_shown or long_run:
            out = stream or sys.stderr
            out.write(self.line(what) + "\n")
            out.flush()
