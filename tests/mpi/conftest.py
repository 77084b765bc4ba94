"""The in-world level: ``mpiexec -n 3 python -m pytest --with-mpi tests/mpi`` (.ci/inworld.sh).

Every rank runs pytest and collects these modules; with the ``mpidispatch.testing`` plugin
(loaded by ``tests/conftest.py``) ranks 1 and 2 then serve as workers for the whole session
while rank 0 runs the tests, and the faces the tests create adopt the serving ranks. Tasks
defined in these modules travel by reference: every rank has imported them. Without
``--with-mpi`` pytest-mpi skips every test here.

Only the behaviour of one healthy world belongs here. A test that kills a rank would end the
whole world; fault injection and launch modes stay in the scenario tests (tests/test_*.py).
"""
