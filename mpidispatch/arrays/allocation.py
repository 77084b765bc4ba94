"""Reading a batch allocation: Grid Engine's ``$PE_HOSTFILE`` and Slurm's node lists.

Pure text parsing (no scheduler command is run), so that it is fast, testable without a
daemon, and gives a clear :class:`AllocationError` naming the malformed value.
"""
from __future__ import annotations

import itertools
import re
from typing import List, Optional, Sequence, Tuple

from .errors import AllocationError

#: (host, number of slots) of one node of an allocation.
Slots = List[Tuple[str, int]]


def parse_pe_hostfile(text: str) -> Slots:
    """(host, slots) pairs from the text of Grid Engine's ``$PE_HOSTFILE``.

    Each line is ``host nslots queue processors``; blank lines are skipped.

    Raises:
        AllocationError: a line without a host and a whole number of slots.
    """
    slots = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].isdigit():
            raise AllocationError("line %d of $PE_HOSTFILE is not 'host nslots queue "
                                  "processors': %r" % (number, line))
        slots.append((fields[0], int(fields[1])))
    return slots


def _split_top(text: str) -> List[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise AllocationError("unbalanced ']' in node list %r" % text)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise AllocationError("unbalanced '[' in node list %r" % text)
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec: str, whole: str) -> List[str]:
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise AllocationError("bad range %r in node list %r" % (item, whole))
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise AllocationError("descending range %r in node list %r" % (item, whole))
        width = len(lo) if lo.startswith("0") else 0   # zero padding: node[01-10]
        out.extend("%0*d" % (width, n) for n in range(int(lo), int(hi) + 1))
    return out


def expand_nodelist(nodelist: str) -> List[str]:
    """Expand a Slurm compressed host list: ``node[01-03,05],gpu1`` -> node01 ... gpu1.

    Handles zero padding and several bracket groups per name (``r[1-2]-n[1-2]``), like
    ``scontrol show hostnames``.

    Raises:
        AllocationError: unbalanced brackets or a bad range.
    """
    hosts: List[str] = []
    for part in _split_top(nodelist.strip()):
        pieces = re.split(r"\[([^\]]*)\]", part)     # literal, range, literal, range, ...
        choices = [[p] if i % 2 == 0 else _expand_range(p, nodelist)
                   for i, p in enumerate(pieces)]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def expand_tasks_per_node(spec: str) -> List[int]:
    """Expand ``$SLURM_TASKS_PER_NODE``: ``2(x3),1`` -> [2, 2, 2, 1].

    Raises:
        AllocationError: a malformed item.
    """
    counts: List[int] = []
    for item in spec.strip().split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise AllocationError("bad item %r in $SLURM_TASKS_PER_NODE=%r (expected e.g. "
                                  "'2(x3),1')" % (item, spec))
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def slurm_slots(nodelist: str, tasks_per_node: str) -> Slots:
    """(host, slots) pairs of a Slurm allocation.

    Raises:
        AllocationError: the two values do not describe the same number of nodes.
    """
    hosts, counts = expand_nodelist(nodelist), expand_tasks_per_node(tasks_per_node)
    if len(hosts) != len(counts):
        raise AllocationError("$SLURM_JOB_NODELIST=%r names %d node(s) but "
                              "$SLURM_TASKS_PER_NODE=%r gives %d count(s)"
                              % (nodelist, len(hosts), tasks_per_node, len(counts)))
    return list(zip(hosts, counts))


def short_name(host: str) -> str:
    """A host name without its domain (``node1.cluster.org`` -> ``node1``)."""
    return host.split(".")[0]


def manager_slot(slots: Sequence[Tuple[str, int]], manager_host: str) -> int:
    """Index, among all slots in order, of the slot the manager itself occupies.

    The first slot on the manager's host (names compared without domain); when its host is
    not in the allocation, the first slot of all (IMP's rule).
    """
    flat = [h for h, n in slots for _ in range(n)]
    mine = [i for i, h in enumerate(flat) if short_name(h) == short_name(manager_host)]
    return mine[0] if mine else 0


def worker_hosts(slots: Sequence[Tuple[str, int]], manager_host: str) -> List[Optional[str]]:
    """One entry per slot of the allocation, in order: the host a worker is spawned on,
    or None for the manager's own slot (its worker runs beside the manager, IMP's rule:
    4 slots give 4 workers, the first of them a plain ``LocalWorker``)."""
    skip = manager_slot(slots, manager_host)
    flat = [h for h, n in slots for _ in range(n)]
    return [None if i == skip else h for i, h in enumerate(flat)]
