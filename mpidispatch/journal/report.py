"""``mpidispatch report run.db -o report.html``: one self-contained HTML page about a run.

The page shows the summary figures, a timeline of every worker (a bar per task attempt;
failures, lost and interrupted attempts and retried tasks marked), utilisation over time, the
task duration histogram, the slowest tasks and the lost workers with their exit status. Plots
are drawn with matplotlib (``pip install 'mpidispatch[report]'``) and embedded as PNG; without
matplotlib the page has the tables only. Reads the journal read-only, so it can be made while
the run goes on.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import os
import signal
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._store import JournalError
from ._view import Attempt, RunRecord, Session, load_run

#: Bar colours of the timeline, by attempt outcome (the report test looks for DONE_COLOUR).
COLOURS = {"done": "#1b9e77", "failed": "#d62728", "lost": "#7f7f7f",
           "interrupted": "#bcbd22", "running": "#1f77b4"}
DONE_COLOUR = COLOURS["done"]
#: Other plots use lighter shades, so that DONE_COLOUR appears in the timeline only.
LIGHT_COLOURS = {"done": "#66c2a5", "failed": "#fc8d62"}


# -- figures ---------------------------------------------------------------------------------
class Figures:
    """Numbers derived from a run's record."""

    def __init__(self, run: RunRecord, now: Optional[float] = None) -> None:
        self.run = run
        now = time.time() if now is None else now
        self.start = min([s.started for s in run.sessions] + [a.started for a in run.attempts]
                         + [w.first_seen for w in run.workers if w.first_seen is not None]
                         or [now])
        last = run.sessions[-1] if run.sessions else None
        alive = last is not None and last.ended is None and now - last.last_write < 15
        self.end = now if alive else max([s.ended or s.last_write for s in run.sessions]
                                         + [a.ended or 0 for a in run.attempts] or [now])
        self.alive = alive
        # An attempt with no end ran until now (live run) or until its session stopped.
        session_end = {s.id: (now if alive and s is last else (s.ended or s.last_write))
                       for s in run.sessions}
        self.bars: List[Tuple[Attempt, float]] = []
        for a in run.attempts:
            end = a.ended if a.ended is not None else session_end.get(a.session, self.end)
            if a.outcome == "running" and not (alive and last is not None and
                                               a.session == last.id):
                a.outcome = "interrupted"
            self.bars.append((a, max(end, a.started)))
        self.finished = [(a, end) for a, end in self.bars if a.outcome in ("done", "failed")]
        self.durations = [end - a.started for a, end in self.finished]

    @property
    def wall_time(self) -> float:
        """Seconds the managers ran, summed over sessions (gaps between them left out)."""
        total = 0.0
        for s in self.run.sessions:
            total += (s.ended or (self.end if self.alive else s.last_write)) - s.started
        return total

    def summary(self) -> List[Tuple[str, str]]:
        c = self.run.counts
        n_tasks = sum(c.values())
        retried = sum(1 for a, _ in self.bars if a.tries > 1)
        rows = [("tasks", "%d" % n_tasks),
                ("done", "%d" % c.get("done", 0)),
                ("failed", "%d" % c.get("failed", 0))]
        for state in ("running", "queued", "interrupted"):
            if c.get(state):
                rows.append((state, "%d" % c[state]))
        lost = sum(1 for a, _ in self.bars if a.outcome == "lost")
        interrupted = sum(1 for a, _ in self.bars if a.outcome == "interrupted")
        rows += [("attempts", "%d (%d lost with their worker, %d interrupted; %d task%s ran "
                              "more than once)" % (len(self.bars), lost, interrupted, retried,
                                                   "" if retried == 1 else "s")),
                 ("sessions", "%d (%s)" % (len(self.run.sessions), _times(
                     "resumed", len(self.run.sessions) - 1))),
                 ("workers", "%d (%d lost)" % (len(self.run.workers), len(self.lost_workers())))]
        wall = self.wall_time
        rows.append(("wall time", "%.1f s" % wall))
        if wall > 0:
            rows.append(("throughput", "%.1f tasks/s" % (len(self.finished) / wall)))
        if self.durations:
            d = self.durations
            rows.append(("task duration", "mean %s, median %s, max %s" % (
                _secs(statistics.fmean(d)), _secs(statistics.median(d)), _secs(max(d)))))
        busy = sum(end - a.started for a, end in self.bars)
        alive = self.worker_seconds()
        if alive > 0:
            rows.append(("utilisation", "%.0f %% of worker time spent on tasks"
                         % (100 * min(busy / alive, 1.0))))
        return rows

    def worker_seconds(self) -> float:
        return sum(end - start for start, end in self.worker_spans())

    def worker_spans(self) -> List[Tuple[float, float]]:
        """(first seen, gone) of every worker: how long each could have run tasks."""
        session_end = {s.id: (s.ended or (self.end if self.alive else s.last_write))
                       for s in self.run.sessions}
        spans = []
        for w in self.run.workers:
            if w.first_seen is None:
                continue
            gone = w.last_seen if w.state in ("lost", "dead") else session_end.get(w.session)
            spans.append((w.first_seen, max(gone or w.first_seen, w.first_seen)))
        return spans

    def lost_workers(self) -> List[Any]:
        return [w for w in self.run.workers if w.state in ("lost", "dead")]

    def slowest(self, n: int = 10) -> List[Tuple[Attempt, float]]:
        return sorted(self.finished, key=lambda b: b[0].started - b[1])[:n]


def _times(what: str, n: int) -> str:
    return "not %s" % what if n <= 0 else "%s once" % what if n == 1 else "%s %d times" % (
        what, n)


def _secs(seconds: float) -> str:
    if seconds < 1e-3:
        return "%.0f µs" % (seconds * 1e6)
    if seconds < 1:
        return "%.1f ms" % (seconds * 1e3)
    return "%.2f s" % seconds


def describe_exit(status: Optional[int]) -> str:
    """``exit 3`` or ``killed by signal 9 (SIGKILL)`` (negative: a signal)."""
    if status is None:
        return "unknown"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "?"
        return "killed by signal %d (%s)" % (-status, name)
    return "exit %d" % status


# -- plots -----------------------------------------------------------------------------------
def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _rows(fig: Figures) -> List[Tuple[int, str]]:
    """Timeline rows: (session, worker), labelled with the session when there are several."""
    seen: Dict[Tuple[int, str], None] = {}
    for w in fig.run.workers:
        seen[(w.session, w.name)] = None
    for a, _ in fig.bars:
        seen.setdefault((a.session, a.worker or "?"), None)
    return list(seen)


def plot_timeline(plt: Any, fig: Figures) -> str:
    rows = _rows(fig)
    index = {r: i for i, r in enumerate(rows)}
    several = len(fig.run.sessions) > 1
    height = min(0.6 + 0.32 * max(len(rows), 1), 40)
    f, ax = plt.subplots(figsize=(11, max(height, 2.2)))
    groups: Dict[Tuple[int, str], List[Tuple[float, float]]] = {}
    retried: List[Tuple[float, int]] = []
    for a, end in fig.bars:
        row = index[(a.session, a.worker or "?")]
        start = a.started - fig.start
        width = max(end - a.started, (fig.end - fig.start) * 1e-4)
        groups.setdefault((row, a.outcome), []).append((start, width))
        if a.tries > 1:
            retried.append((start, row))
    shown = set()
    for (row, outcome), spans in groups.items():
        colour = COLOURS.get(outcome, "#17becf")
        label = None if outcome in shown else outcome
        shown.add(outcome)
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colour, label=label,
                       hatch="///" if outcome in ("lost", "interrupted") else None,
                       edgecolor="white" if outcome in ("lost", "interrupted") else None,
                       linewidth=0)
    if retried:
        ax.plot([x for x, _ in retried], [r - 0.45 for _, r in retried], linestyle="none",
                marker="v", markersize=4, color="black", label="retried task")
    for s in fig.run.sessions[1:]:
        ax.axvline(s.started - fig.start, color="black", linestyle="--", linewidth=0.8)
        ax.text(s.started - fig.start, len(rows) - 0.55, " resumed", fontsize=8,
                va="bottom")
    for w in fig.lost_workers():
        if (w.session, w.name) in index and w.last_seen is not None:
            ax.plot([w.last_seen - fig.start], [index[(w.session, w.name)]], marker="X",
                    color="#d62728", markersize=9, linestyle="none")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([("s%d %s" % r) if several else r[1] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -1)
    ax.set_xlim(0, max(fig.end - fig.start, 1e-3))
    ax.set_xlabel("seconds since the run started")
    ax.set_title("Timeline: one bar per task attempt on each worker", loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=6, frameon=False)
    f.tight_layout()
    return _png(f)


def _integral(times: Sequence[float], steps: Sequence[int], at: Any) -> Any:
    """Integral over time of a step function given as +1/-1 events, sampled at ``at``."""
    import numpy as np
    if not len(times):
        return np.zeros(len(at))
    order = np.argsort(times, kind="stable")
    t = np.asarray(times, dtype=float)[order]
    level = np.cumsum(np.asarray(steps, dtype=float)[order])
    area = np.concatenate(([0.0], np.cumsum(level[:-1] * np.diff(t))))
    return np.interp(at, t, area, left=0.0, right=area[-1]) + \
        np.where(at > t[-1], level[-1] * (at - t[-1]), 0.0)


def plot_utilisation(plt: Any, fig: Figures) -> str:
    import numpy as np
    span = max(fig.end - fig.start, 1e-3)
    edges = fig.start + np.linspace(0, span, 201)
    busy_t, busy_s = [], []
    for a, end in fig.bars:
        busy_t += [a.started, end]
        busy_s += [1, -1]
    live_t, live_s = [], []
    for start, end in fig.worker_spans():
        live_t += [start, end]
        live_s += [1, -1]
    busy = np.diff(_integral(busy_t, busy_s, edges))
    live = np.diff(_integral(live_t, live_s, edges))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(live > 0, np.minimum(busy / live, 1.0), np.nan) * 100
    width = span / 200
    f, ax = plt.subplots(figsize=(11, 2.6))
    ax.fill_between(edges[:-1] - fig.start + width / 2, share, step="mid",
                    color=LIGHT_COLOURS["done"])
    ax.set_ylim(0, 105)
    ax.set_xlim(0, span)
    ax.set_ylabel("% of workers busy")
    ax.set_xlabel("seconds since the run started")
    ax.set_title("Utilisation over time: share of the live workers' time spent on tasks")
    f.tight_layout()
    return _png(f)


def plot_durations(plt: Any, fig: Figures) -> str:
    import numpy as np
    d = np.asarray(fig.durations, dtype=float)
    f, ax = plt.subplots(figsize=(11, 2.6))
    positive = d[d > 0]
    bins: Any = 40
    if len(positive) and positive.max() / max(positive.min(), 1e-9) > 100:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40)
        ax.set_xscale("log")
    ok = [end - a.started for a, end in fig.finished if a.outcome == "done"]
    bad = [end - a.started for a, end in fig.finished if a.outcome == "failed"]
    ax.hist([ok, bad], bins=bins, stacked=True,
            color=[LIGHT_COLOURS["done"], LIGHT_COLOURS["failed"]],
            label=["done", "failed"])
    ax.set_xlabel("task duration (s)")
    ax.set_ylabel("tasks")
    ax.set_title("Task durations")
    ax.legend(fontsize=8)
    f.tight_layout()
    return _png(f)


# -- the page --------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()
           ) -> str:
    out = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % html.escape(h) for h in header)]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append("<td%s>%s</td>" % (cls, html.escape(str(cell))))
        out.append("<tr>%s</tr>" % "".join(cells))
    out.append("</table>")
    return "\n".join(out)


def _clock(t: Optional[float]) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _session_rows(sessions: Sequence[Session]) -> List[List[Any]]:
    return [[s.id, s.host, s.pid, _clock(s.started), _clock(s.ended),
             s.how or "running", " ".join(s.argv)[:80]] for s in sessions]


def render(run: RunRecord, now: Optional[float] = None, plots: bool = True) -> str:
    """The report page for ``run`` as an HTML string."""
    fig = Figures(run, now)
    plt = _matplotlib() if plots else None
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>mpidispatch run report: %s</title>" % html.escape(run.path),
             "<style>%s</style></head><body>" % _CSS,
             "<h1>Run report: <code>%s</code></h1>" % html.escape(os.path.basename(run.path)),
             "<p class='note'>run id %s; journal %s; made %s%s</p>" % (
                 html.escape(run.run_id), html.escape(run.path), _clock(time.time()),
                 "; <b>the run is still going</b>" if fig.alive else ""),
             "<h2>Summary</h2>", _table(["", ""], fig.summary())]
    if plt is None:
        parts.append("<p class='note'>Plots need matplotlib: <code>pip install "
                     "'mpidispatch[report]'</code>. Tables only.</p>")
    if plt is not None and fig.bars:
        parts += ["<h2>Timeline</h2>",
                  "<img id='timeline' alt='timeline' src='data:image/png;base64,%s'>"
                  % plot_timeline(plt, fig),
                  "<p class='note'>Colours: %s. &#9660; marks a task that ran more than "
                  "once; &#10006; where a worker was lost; dashed lines where a run "
                  "resumed.</p>" % ", ".join(
                      "<span style='color:%s'>&#9632;</span> %s" % (c, o)
                      for o, c in COLOURS.items()),
                  "<h2>Utilisation</h2>",
                  "<img alt='utilisation' src='data:image/png;base64,%s'>"
                  % plot_utilisation(plt, fig)]
        if fig.durations:
            parts += ["<h2>Task durations</h2>",
                      "<img alt='durations' src='data:image/png;base64,%s'>"
                      % plot_durations(plt, fig)]
    elif not fig.bars:
        parts.append("<p>No task has started yet.</p>")
    per_worker: Dict[Tuple[int, str], List[int]] = {}
    for a, _ in fig.bars:
        counts = per_worker.setdefault((a.session, a.worker or "?"), [0, 0, 0])
        counts[0 if a.outcome == "done" else 1 if a.outcome == "failed" else 2] += 1
    hosts = {(w.session, w.name): w for w in run.workers}
    rows = []
    for key, (done, failed, other) in per_worker.items():
        w = hosts.get(key)
        rows.append([key[0], key[1], w.host if w else "-", w.state if w else "-", done, failed,
                     other])
    parts += ["<h2>Workers</h2>",
              _table(["session", "worker", "host", "state", "done", "failed",
                      "lost/interrupted"], rows, numeric=(4, 5, 6))]
    slow = fig.slowest()
    if slow:
        parts += ["<h2>Slowest tasks</h2>", _table(
            ["task key", "worker", "host", "started", "duration", "outcome", "tries"],
            [[a.key, a.worker or "-", a.host or "-", _clock(a.started), _secs(end - a.started),
              a.outcome, a.tries] for a, end in slow], numeric=(4, 6))]
    lost = fig.lost_workers()
    parts.append("<h2>Lost workers</h2>")
    if lost:
        parts.append(_table(["session", "worker", "host", "last contact", "exit status"],
                            [[w.session, w.name, w.host or "-", _clock(w.last_seen),
                              describe_exit(w.exit_status)] for w in lost]))
    else:
        parts.append("<p>None.</p>")
    parts += ["<h2>Sessions</h2>",
              _table(["session", "host", "pid", "started", "ended", "how", "command"],
                     _session_rows(run.sessions)),
              "</body></html>"]
    return "\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpidispatch report",
        description="Write one self-contained HTML page about a journaled run: summary, "
                    "timeline per worker, utilisation, task durations, slowest tasks, lost "
                    "workers. Plots need matplotlib (pip install 'mpidispatch[report]').")
    p.add_argument("journal", help="the run's journal file")
    p.add_argument("-o", "--output", default="report.html",
                   help="the HTML file to write (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="tables only, even with matplotlib")
    return p


def report_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``mpidispatch report``. Returns the exit status (2: unreadable)."""
    args = _parser().parse_args(argv)
    try:
        run = load_run(args.journal)
    except JournalError as exc:
        print("mpidispatch report: %s" % exc, file=sys.stderr)
        return 2
    page = render(run, plots=not args.no_plots)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, args.output)
    print("wrote %s (%d kB, %d task attempts)" % (args.output, len(page) // 1024,
                                                 len(run.attempts)))
    return 0
