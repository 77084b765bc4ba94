"""The scheduler-independent job machinery; one small subclass per scheduler adds its
directives, its job-id format and how to ask for a job's state and exit code.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from . import _script
from .errors import JobTimeoutError, SchedulerError, SchedulerNotFoundError

#: Normalised job states returned by :meth:`Job.state`.
PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, UNKNOWN = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "UNKNOWN")
FINISHED_STATES = frozenset({COMPLETED, FAILED, CANCELLED})

#: Exit code :meth:`Job.wait` returns for a cancelled job, whatever its scheduler reports
#: (Slurm says 15, Grid Engine 137 or nothing): 128 + SIGTERM, as a shell would.
CANCELLED_EXIT_CODE = 143


@dataclass
class JobOptions:
    """Validated options of one submission (see :func:`mpidispatch.launch.submit`)."""
    script: str
    args: Tuple[str, ...]
    nprocs: int
    name: str
    workdir: str
    time_s: Optional[int] = None
    queue: Optional[str] = None
    pe: Optional[str] = None
    mem_mib: Optional[int] = None
    array: Optional[Tuple[int, int]] = None
    fault_tolerant: bool = False
    launcher: str = "mpiexec"
    extra_directives: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)


class Job:
    """A batch job: renders its script, submits it and follows it.

    Subclasses set the class attributes and implement :meth:`header_lines`,
    :meth:`_query` and :meth:`output_files`.

    Attributes:
        id: the scheduler's job id (None before submission and for a dry run).
        script: the rendered job script.
        script_path: where the script is (or, for a dry run, would be) written.
        options: the validated :class:`JobOptions`.
    """

    scheduler: ClassVar[str] = ""
    submit_command: ClassVar[Sequence[str]] = ()
    cancel_command: ClassVar[Sequence[str]] = ()
    directive_prefix: ClassVar[str] = "#"
    script_suffix: ClassVar[str] = ".sh"
    job_id_regexp: ClassVar[str] = r"^\s*(?P<job_id>\d+)"
    #: substrings of a command's stderr that mean "try again" (daemon busy, restarting).
    transient_errors: ClassVar[Tuple[str, ...]] = ()
    #: what to do when the client commands are missing.
    install_hint: ClassVar[str] = ""
    command_timeout: ClassVar[float] = 30.0
    retries: ClassVar[int] = 4
    #: seconds a job may be unknown to the scheduler (accounting lag) before wait() gives up.
    unknown_grace: ClassVar[float] = 20.0

    def __init__(self, options: JobOptions):
        self.options = options
        self.id: Optional[str] = None
        self.script_path = os.path.join(options.workdir, options.name + self.script_suffix)
        self.script = self.render()
        self._cancelled = False

    # ------------------------------------------------------------------ rendering
    def header_lines(self) -> List[str]:
        """The scheduler directives (without the prefix), one option each."""
        raise NotImplementedError

    def render(self) -> str:
        """The complete job script."""
        o = self.options
        head = ["#!/bin/bash"]
        head += ["%s %s" % (self.directive_prefix, line) for line in self.header_lines()]
        for d in o.extra_directives:
            d = d.strip()
            head.append(d if d.startswith("#") else "%s %s" % (self.directive_prefix, d))
        command = _script.launch_command(o.script, o.args, o.nprocs, o.fault_tolerant,
                                         o.launcher)
        rc_file = '"%s/%s-$job${task:+.$task}.rc"' % (o.workdir, o.name)
        return "\n".join(head) + "\n" + _script.script_body(
            o.env, command, o.workdir, rc_file, self.pre_launch_lines())

    def pre_launch_lines(self) -> List[str]:
        """Shell lines run just before the launch line (subclass hook)."""
        return []

    def submit_argv(self) -> List[str]:
        """The command line that submits the job script."""
        return [*self.submit_command, self.script_path]

    # ------------------------------------------------------------------ commands
    @classmethod
    def run_command(cls, argv: Sequence[str], check: bool = True,
                    ok_errors: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """Run a scheduler client command, bounded and retried on transient errors.

        Args:
            check: raise :class:`SchedulerError` on a non-zero exit status.
            ok_errors: stderr substrings that are an answer, not a failure (returned as is).

        Raises:
            SchedulerNotFoundError: the command is not on PATH.
            SchedulerError: it failed (after retries), or timed out every time.
        """
        exe = cls._find_exe(argv[0])
        delay, last = 0.5, ""
        for attempt in range(cls.retries + 1):
            try:
                proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                                      timeout=cls.command_timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                last = "no answer within %.0f s" % cls.command_timeout
            else:
                err = proc.stderr + proc.stdout
                if proc.returncode == 0 or any(e in err for e in ok_errors):
                    return proc
                last = "exit status %d: %s" % (proc.returncode, err.strip())
                if not any(e in err for e in cls.transient_errors):
                    if not check:
                        return proc
                    break
            if attempt < cls.retries:
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise SchedulerError("`%s` failed (%s)%s" % (shlex.join(argv), last,
                                                      cls.explain(last)))

    @classmethod
    def _find_exe(cls, name: str) -> str:
        exe = shutil.which(name)
        if exe is None:
            raise SchedulerNotFoundError(
                "%r was not found on PATH, so jobs cannot be submitted to %s from here. "
                "Fix: %s, or run this on the cluster's login node. (Use {option:dry_run} "
                "to only print the job script.)"
                % (name, cls.scheduler, cls.install_hint))
        return exe

    @classmethod
    def explain(cls, error: str) -> str:
        """A hint appended to a failed command's message (subclasses know their errors)."""
        return ""

    @classmethod
    def parse_job_id(cls, output: str) -> str:
        """The job id in the submit command's output.

        Raises:
            SchedulerError: the output holds no job id.
        """
        m = re.search(cls.job_id_regexp, output, re.MULTILINE)
        if not m:
            raise SchedulerError(
                "could not find a job id in the output of `%s` (expected a match of %r): %r"
                % (" ".join(cls.submit_command), cls.job_id_regexp, output.strip()))
        return m.group("job_id")

    # ------------------------------------------------------------------ lifecycle
    def submit(self) -> "Job":
        """Write the script into the working directory and submit it; sets :attr:`id`."""
        if self.id is not None:
            raise SchedulerError("job %s was already submitted" % self.id)
        self._find_exe(self.submit_command[0])        # before writing anything
        os.makedirs(self.options.workdir, exist_ok=True)
        # only the user may read it (it names the run's files), whatever the umask
        fd = os.open(self.script_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fd, 0o700)
            fh.write(self.script)
        proc = self.run_command(self.submit_argv())
        self.id = self.parse_job_id(proc.stdout)
        self.check_runnable(cancel=True)
        return self

    def check_runnable(self, cancel: bool = False) -> None:
        """Raise :class:`JobWillNotRunError` if the scheduler keeps the job pending for a
        reason that will not resolve by itself (subclass hook; the default checks nothing).

        Args:
            cancel: cancel such a job before raising (``submit`` does: it would never run).
        """

    def _require_id(self) -> str:
        if self.id is None:
            raise SchedulerError("this job was not submitted (dry run?)")
        return self.id

    def _query(self) -> Tuple[str, Optional[int]]:
        """(normalised state, exit code or None while unknown); subclass hook."""
        raise NotImplementedError

    def state(self) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED, CANCELLED or UNKNOWN."""
        self._require_id()
        return self._query()[0]

    def wait(self, timeout: Optional[float] = 3600.0, poll: float = 0.25) -> int:
        """Block until the job (all its array tasks) finished; return its exit code.

        For an array, the largest task exit code. A cancelled job returns
        :data:`CANCELLED_EXIT_CODE` (143).

        Raises:
            JobTimeoutError: still not finished after ``timeout`` seconds (None: no limit);
                the job is left running.
            JobWillNotRunError: the job pends for a reason that will not resolve by itself
                (the job is left as it is; the message says how to cancel it).
        """
        job_id = self._require_id()
        deadline = None if timeout is None else time.monotonic() + timeout
        unknown_since: Optional[float] = None
        while True:
            state, code = self._query()
            if state == UNKNOWN:
                now = time.monotonic()
                unknown_since = unknown_since or now
                if now - unknown_since > self.unknown_grace:
                    raise SchedulerError(
                        "%s no longer knows job %s (it may have finished long ago, or been "
                        "removed), so its exit code is lost; look at its output file(s): %s"
                        % (self.scheduler, job_id, ", ".join(self.output_files()) or "none"))
            else:
                unknown_since = None
            if state == PENDING:
                self.check_runnable(cancel=False)
            if state == CANCELLED:
                return CANCELLED_EXIT_CODE
            if state in FINISHED_STATES and code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(
                    "%s job %s is still %s after %.0f s; it was left alone: wait again, or "
                    "cancel it with job.cancel() / `%s %s`"
                    % (self.scheduler, job_id, state, timeout or 0.0,
                       " ".join(self.cancel_command), job_id))
            time.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    def cancel(self) -> None:
        """Ask the scheduler to cancel the job (all array tasks). Returns at once."""
        job_id = self._require_id()
        self._cancelled = True
        self.run_command([*self.cancel_command, job_id])

    def output_files(self) -> List[str]:
        """Paths of the job's output file(s) that exist now (one per array task)."""
        raise NotImplementedError

    def exit_codes(self) -> Optional[List[int]]:
        """Exit codes the job script recorded (one per array task); None until all are there.

        The job writes ``NAME-ID[.TASK].rc`` in the working directory when its launcher
        returns; a job killed by the scheduler writes none.
        """
        o, job_id = self.options, self._require_id()
        pattern = "%s-%s.*.rc" % (o.name, job_id) if o.array else "%s-%s.rc" % (o.name, job_id)
        codes = []
        for path in glob.glob(os.path.join(o.workdir, pattern)):
            try:
                with open(path) as fh:
                    codes.append(int(fh.read().strip()))
            except (OSError, ValueError):
                return None                      # being written
        expected = o.array[1] - o.array[0] + 1 if o.array else 1
        return codes if len(codes) == expected else None

    def _glob_outputs(self, pattern: str) -> List[str]:
        def key(path: str) -> Tuple[int, str]:
            m = re.search(r"\.(\d+)\.out$", path)
            return (int(m.group(1)) if m else 0, path)
        return sorted(glob.glob(pattern), key=key)

    def output(self) -> str:
        """The text of the job's output file(s); array tasks each under a header line."""
        files = self.output_files()
        if len(files) == 1 and self.options.array is None:
            with open(files[0], errors="replace") as fh:
                return fh.read()
        parts = []
        for path in files:
            with open(path, errors="replace") as fh:
                parts.append("==> %s <==\n%s" % (os.path.basename(path), fh.read()))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.id or "(not submitted)",
                               self.options.name)
