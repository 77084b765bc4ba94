"""Validation and normalisation of the options of :func:`mpidispatch.launch.submit`.

Everything here raises :class:`ValueError` with a message naming the option, so a bad option
is reported before anything is written or submitted.
"""
from __future__ import annotations

import datetime
import os
import re
from typing import Optional, Tuple, Union

TimeSpec = Union[str, int, datetime.timedelta, None]

_TIME_FORMATS = "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS, " \
                "DAYS-HOURS:MINUTES or DAYS-HOURS:MINUTES:SECONDS (e.g. 30, 1:30:00, 2-00:00:00)"


def parse_time(value: TimeSpec) -> Optional[int]:
    """A wall-clock limit in seconds, from Slurm's time formats (a bare number is minutes).

    Returns None for None. Raises ValueError for anything else that is not a positive time.
    """
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = int(value.total_seconds())
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value * 60
    elif isinstance(value, str):
        seconds = _parse_time_str(value.strip())
    else:
        raise ValueError("time must be a string, an int (minutes) or a timedelta, not %r"
                         % (value,))
    if seconds <= 0:
        raise ValueError("time must be positive, got %r" % (value,))
    return seconds


def _parse_time_str(text: str) -> int:
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError("bad time %r: use %s" % (text, _TIME_FORMATS))
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:                     # D-H, D-H:M, D-H:M:S
        h, mi, s = (nums + [0, 0])[:3]
        total = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(nums) == 1:                     # M
        total = nums[0] * 60
    elif len(nums) == 2:                     # M:S
        total = nums[0] * 60 + nums[1]
    else:                                    # H:M:S
        total = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if any(n >= 60 for n in nums[1:]):
        raise ValueError("bad time %r: minutes and seconds must be < 60" % text)
    return total


def format_hms(seconds: int) -> str:
    """``H:MM:SS`` with unbounded hours (Grid Engine's ``h_rt``)."""
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def format_slurm_time(seconds: int) -> str:
    """``[D-]HH:MM:SS`` as Slurm prints it."""
    days, rest = divmod(seconds, 86400)
    hms = "%02d:%02d:%02d" % (rest // 3600, rest // 60 % 60, rest % 60)
    return "%d-%s" % (days, hms) if days else hms


_MEM_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_mem(value: Union[str, int, None]) -> Optional[int]:
    """Memory per MPI rank in MiB, from ``4G``, ``500M``, ``500MB``, ``1024`` (MiB) ..."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError("mem must be a string such as '2G' or an int (MiB), not %r" % (value,))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)[Bb]?", text)
    if not m:
        raise ValueError("bad mem %r: use a number with an optional unit K, M, G or T "
                         "(e.g. 500M, 4G; a bare number is MiB)" % (value,))
    mib = float(m.group(1)) * _MEM_UNITS[m.group(2).upper()]
    if mib < 1:
        raise ValueError("mem %r is less than 1 MiB" % (value,))
    return int(round(mib))


def parse_nprocs(value: object) -> int:
    """The number of MPI ranks: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise ValueError("nprocs must be a whole number >= 1, got %r" % (value,)) from None
    if value < 1:
        raise ValueError("nprocs must be >= 1, got %d" % value)
    return value


def parse_array(value: Union[str, int, None]) -> Optional[Tuple[int, int]]:
    """A job array: ``3`` (tasks 1-3) or ``"1-10"``; returns (first, last) or None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        first, last = 1, value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", str(value))
        if not m:
            raise ValueError("bad array %r: use a count (3) or a range (1-3)" % (value,))
        first, last = (1, int(m.group(1))) if m.group(2) is None \
            else (int(m.group(1)), int(m.group(2)))
    if first < 1 or last < first:
        raise ValueError("bad array %r: need 1 <= first <= last" % (value,))
    return first, last


_NAME_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def job_name(name: Optional[str], script: str) -> str:
    """A job name both schedulers accept; derived from the script's file name when None."""
    if name is None:
        stem = os.path.splitext(os.path.basename(script))[0]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "job"
        if not _NAME_OK.fullmatch(name):
            name = ("j" + name)[:64]
        return name
    if not _NAME_OK.fullmatch(name):
        raise ValueError("bad job name %r: use up to 64 letters, digits, '_', '.', '-', "
                         "starting with a letter or '_'" % (name,))
    return name
