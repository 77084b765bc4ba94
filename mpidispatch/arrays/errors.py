"""The errors of worker arrays (both are also :class:`mpidispatch.errors.Error`)."""
from __future__ import annotations

from ..errors import Error


class AllocationError(Error, RuntimeError):
    """The scheduler allocation could not be read (not inside one, or malformed values)."""


class ConnectNotSupportedError(Error, RuntimeError):
    """The MPI library in use cannot connect separately launched jobs (Open MPI 5 wheel)."""
