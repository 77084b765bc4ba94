# Load mpidispatch's pytest plugin: the mpidispatch_face fixture, --mpidispatch-in-process,
# and rank 0 running the tests under `mpiexec -n N python -m pytest --with-mpi`.
pytest_plugins = ["mpidispatch.testing"]
