"""``mpidispatch submit``: run a Python script with N MPI ranks as a batch job.

The lead wires :func:`add_submit_arguments` and :func:`run_submit` into the main CLI;
:func:`main` is a standalone entry point (``python -m mpidispatch.launch.cli ...``).
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from typing import List, Optional

from . import SCHEDULERS, submit
from ._base import Job
from .errors import JobTimeoutError, SchedulerError


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``mpidispatch submit`` to ``parser``."""
    parser.add_argument("--scheduler", "-s", required=True, choices=sorted(SCHEDULERS),
                        help="batch scheduler to submit to")
    parser.add_argument("-n", "--nprocs", type=int, default=1, metavar="N",
                        help="number of MPI ranks (default 1)")
    parser.add_argument("--time", "-t", metavar="T",
                        help="wall-clock limit: MINUTES, H:MM:SS or D-HH:MM:SS")
    parser.add_argument("--partition", "--queue", "-q", dest="queue", metavar="Q",
                        help="Slurm partition / Grid Engine queue")
    parser.add_argument("--pe", metavar="NAME",
                        help="Grid Engine parallel environment (default: mpi)")
    parser.add_argument("--mem", metavar="M", help="memory per rank, e.g. 2G")
    parser.add_argument("--array", metavar="N|A-B",
                        help="submit a job array (3 = tasks 1-3, or a range 1-10)")
    parser.add_argument("--fault-tolerant", action="store_true",
                        help="launch with ULFM so a rank's death does not kill the job")
    parser.add_argument("--launcher", choices=("mpiexec", "srun"), default="mpiexec",
                        help="what starts the ranks inside the job (srun: Slurm + MPICH)")
    parser.add_argument("--name", "-J", metavar="NAME", help="job name (default: script name)")
    parser.add_argument("--journal", metavar="FILE",
                        help="record every task in this run journal (relative to --workdir); "
                             "a resubmitted job resumes from it (docs/journal.md)")
    parser.add_argument("--workdir", "-C", metavar="DIR",
                        help="directory for the job script and output (default: .)")
    parser.add_argument("--directive", "-D", action="append", default=[], metavar="LINE",
                        help="extra scheduler directive, e.g. -D=--nodes=2 (repeatable)")
    parser.add_argument("--wait", "-w", action="store_true",
                        help="follow the job to its end, show its output, exit with its code")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --wait: give up waiting after this long (exit 124; the "
                             "job keeps running). Default: no limit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the job script and the submit command; submit nothing")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")


def run_submit(args: argparse.Namespace) -> int:
    """Carry out ``mpidispatch submit``; returns the process exit code."""
    try:
        job = submit(args.script, args=args.args, scheduler=args.scheduler,
                     nprocs=args.nprocs, time=args.time, queue=args.queue, pe=args.pe,
                     mem=args.mem, fault_tolerant=args.fault_tolerant, name=args.name,
                     workdir=args.workdir, dry_run=args.dry_run,
                     extra_directives=args.directive, array=args.array,
                     launcher=args.launcher, journal=args.journal)
    except ValueError as exc:
        print("mpidispatch submit: error: %s" % _flags(str(exc)), file=sys.stderr)
        return 2
    except SchedulerError as exc:
        print("mpidispatch submit: %s" % exc.in_language("cli"), file=sys.stderr)
        return 1
    if args.dry_run:
        print("# job script (would be written to %s):" % job.script_path)
        print(job.script)
        print("# submit command:")
        print(shlex.join(job.submit_argv()))
        return 0
    print(job.id, flush=True)
    if not args.wait:
        return 0
    return _follow(job, args.timeout)


def _follow(job: Job, timeout: Optional[float]) -> int:
    cancel = "%s %s" % (" ".join(job.cancel_command), job.id)
    try:
        code = job.wait(timeout=timeout)
    except JobTimeoutError as exc:
        print("mpidispatch submit: %s" % exc, file=sys.stderr)
        return 124
    except KeyboardInterrupt:
        print("\nmpidispatch submit: stopped waiting; job %s keeps running (cancel: %s)"
              % (job.id, cancel), file=sys.stderr)
        return 130
    except SchedulerError as exc:
        print("mpidispatch submit: %s" % exc.in_language("cli"), file=sys.stderr)
        return 1
    files = job.output_files()
    for path in files:
        print("==> %s <==" % path, file=sys.stderr, flush=True)
        with open(path, errors="replace") as fh:
            sys.stdout.write(fh.read())
        sys.stdout.flush()
    print("mpidispatch submit: job %s finished: %s, exit code %d"
          % (job.id, job.state(), code), file=sys.stderr)
    return code


#: submit()'s keywords as the messages of its ValueErrors name them -> the command's flags.
_KEYWORD_FLAGS = {"journal": "--journal", "nprocs": "-n", "time": "--time", "mem": "--mem", "array": "--array",
                  "queue": "--partition", "pe": "--pe", "workdir": "--workdir",
                  "pe (parallel environment)": "--pe",
                  "launcher='srun'": "--launcher srun", "scheduler='slurm'": "--scheduler slurm",
                  "bad job name": "bad --name"}


def _flags(message: str) -> str:
    """A ValueError message of :func:`submit` with its keywords written as flags."""
    for keyword, flag in sorted(_KEYWORD_FLAGS.items(), key=lambda kv: -len(kv[0])):
        message = re.sub(r"(^|\bbad |\bwith |Slurm, )%s(?=[ ,:]|$)" % re.escape(keyword),
                         lambda m: m.group(1) + flag, message)
    return message


def main(argv: Optional[List[str]] = None) -> int:
    """Standalone ``submit`` command (the same as ``mpidispatch submit``)."""
    parser = argparse.ArgumentParser(
        prog="mpidispatch submit",
        description="Run a Python script with N MPI ranks as a Slurm or Grid Engine job.")
    add_submit_arguments(parser)
    return run_submit(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
