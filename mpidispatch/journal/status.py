"""``mpidispatch status run.db [--watch]``: how far a run has got, from anywhere the file is
readable (a login node while the job runs on compute nodes, or after it ended).

Prints tasks done / running / queued / failed, the rate over the last minute and an ETA, and
the workers with their hosts and last contact. Reads the journal read-only: it never blocks
or slows the manager.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, TextIO

from ._store import JournalError
from ._view import SILENT_AFTER, Status, load_status


def _ago(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return "%s ago" % _duration(max(seconds, 0.0))


def _duration(seconds: float) -> str:
    if seconds < 10:
        return "%.1f s" % seconds
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%d min %02d s" % divmod(int(seconds), 60)
    hours, rest = divmod(int(seconds), 3600)
    return "%d h %02d min" % (hours, rest // 60)


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def format_status(st: Status, now: Optional[float] = None) -> str:
    """The text ``status`` prints for one reading of the journal."""
    now = time.time() if now is None else now
    s = st.session
    lines = []
    if st.alive:
        state = "running: manager pid %s on %s, last write %s" % (s.pid, s.host,
                                                                  _ago(now - s.last_write))
    elif s.ended is None:
        state = ("manager pid %s on %s not heard from for %s (no write for more than %g s): "
                 "stopped without closing the journal (killed?). Run the script again to "
                 "resume." % (s.pid, s.host, _duration(now - s.last_write), SILENT_AFTER))
    elif s.how == "closed":
        state = "ended %s (%s ago)" % (_clock(s.ended), _duration(now - s.ended))
    else:
        state = "%s at %s" % (s.how, _clock(s.ended))
    resumed = len(st.sessions) - 1
    lines.append("%s  (run id %s%s)" % (st.path, st.run_id, ", resumed %d time%s" % (
        resumed, "" if resumed == 1 else "s") if resumed else ""))
    lines.append("  %s" % state)
    c = st.counts
    total = sum(c.values())
    done_text = "%d" % c.get("done", 0)
    if st.done_earlier:
        done_text += " (%d from earlier sessions)" % st.done_earlier
    parts = ["done %s" % done_text, "running %d" % c.get("running", 0),
             "queued %d" % c.get("queued", 0), "failed %d" % c.get("failed", 0)]
    if c.get("interrupted"):
        parts.append("interrupted %d (rerun on resume)" % c["interrupted"])
    lines.append("tasks    %s; %d known" % (", ".join(parts), total))
    if not st.alive:
        ran = max(s.last_write - s.started, 0.0)
        lines.append("last     session: %d tasks ended in %s (%.1f tasks/s)" % (
            st.finished_in_session, _duration(ran),
            st.finished_in_session / ran if ran > 0 else 0.0))
        lines.extend(_worker_lines(st, now))
        return "\n".join(lines)
    rate = "%.1f tasks/s over the last %s" % (st.rate, _duration(st.window))
    eta = st.eta
    if eta is not None:
        rate += "; ETA %s (%s) for the %d tasks known and not done" % (
            _duration(eta), _clock(now + eta), st.remaining)
    elif st.alive and st.remaining:
        rate += "; ETA unknown (no task ended recently)"
    lines.append("rate     %s" % rate)
    lines.extend(_worker_lines(st, now))
    return "\n".join(lines)


def _worker_lines(st: Status, now: float) -> List[str]:
    lines = []
    workers = st.workers
    if workers:
        lost = sum(1 for w in workers if w.state in ("lost", "dead"))
        busy = sum(1 for w in workers if w.running)
        lines.append("workers  %d (%d busy, %d lost)" % (len(workers), busy, lost))
        lines.append("  %-20s %-16s %-16s %6s  %s" % ("name", "host", "state", "tasks",
                                                      "last contact"))
        for w in workers:
            state = w.state or "-"
            if not st.alive and state in ("ready", "-"):
                state = "gone"          # its manager is gone
            elif w.running and state in ("ready", "-"):
                state = "busy"
            if w.exit_status is not None:
                state += " (exit %d)" % w.exit_status
            lines.append("  %-20s %-16s %-16s %6d  %s" % (
                w.name, w.host or "-", state, w.tasks_done,
                _ago(None if w.last_seen is None else now - w.last_seen)))
    else:
        lines.append("workers  none recorded in this session")
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpidispatch status",
        description="Show how far a journaled run has got: tasks done/running/queued/failed, "
                    "the rate over the last minute, an ETA and the workers. Read-only: it "
                    "never slows the run.")
    p.add_argument("journal", help="the run's journal file (journal=... in the script)")
    p.add_argument("-w", "--watch", nargs="?", const=2.0, type=float, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until the run ends or Ctrl-C")
    return p


def status_main(argv: Optional[List[str]] = None, out: Optional[TextIO] = None) -> int:
    """Entry point of ``mpidispatch status``. Returns the exit status (2: unreadable)."""
    out = sys.stdout if out is None else out
    args = _parser().parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        _parser().error("--watch needs a positive number of seconds")
    try:
        while True:
            try:
                st = load_status(args.journal)
            except JournalError as exc:
                print("mpidispatch status: %s" % exc, file=sys.stderr)
                return 2
            text = format_status(st)
            if args.watch is None:
                print(text, file=out)
                return 0
            if out.isatty():
                out.write("\033[H\033[2J")
            print(text, file=out)
            print("(refreshing every %g s; Ctrl-C to stop)" % args.watch, file=out)
            out.flush()
            if not st.alive:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:   # e.g. `mpidispatch status run.db | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())   # so that the exit's flush does not complain
        return 0
