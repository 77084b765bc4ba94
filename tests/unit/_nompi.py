"""Shared by the unit tests (imported by each): no MPI process is started and MPI is never
initialized here.

They drive the engine's parts that hold the rules (task group, failure policy, options,
wire records) with plain objects and fakes of the engine or communicator.
"""
import sys

import pytest


@pytest.fixture(autouse=True)
def no_mpi_initialized():
    """Fail a unit test that initialized MPI (it belongs in the integration level)."""
    yield
    mod = sys.modules.get("mpi4py.MPI")
    if mod is not None:
        assert not mod.Is_initialized(), "a unit test initialized MPI"
