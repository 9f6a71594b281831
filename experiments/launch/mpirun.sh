#!/usr/bin/env bash
# mvcl-pretrain launched by Open MPI's mpirun: NP processes on the hosts in HOSTS (default: this
# machine), joined by jax.distributed, which finds the coordinator, the process count and each
# process's rank in the OMPI_* variables mpirun sets (README, "Clusters"). Start one process per
# GPU on GPU hosts (JAX gives each its own GPU), one per host on CPU or TPU hosts. The workdir
# and the data directory must be on a file system every host sees.
#
#   experiments/launch/mpirun.sh                   # 2 processes here, the bundled digits
#   NP=16 HOSTS=node0:8,node1:8 CONFIG=cifar10 WORKDIR=/shared/runs/cifar10 \
#       TFDS_DATA_DIR=/shared/tensorflow_datasets experiments/launch/mpirun.sh
#   experiments/launch/mpirun.sh --dry-run         # print the mvcl command, start nothing
#
# Further arguments are added to the mvcl-pretrain command (e.g. --config.num_epochs=20).
# Running the same command again resumes the run from its newest checkpoint. To stop with a
# checkpoint, send SIGTERM to one mvcl-pretrain process (every process then saves the same step
# and exits with status 0), not to mpirun: mpirun kills its processes 1 s after passing a signal
# on (Open MPI's odls_base_sigkill_timeout). tests/test_clusters.py runs this script (NP=2).
set -euo pipefail

NP=${NP:-2}
CONFIG=${CONFIG:-digits}
WORKDIR=${WORKDIR:-workdirs/mpirun_${CONFIG%%:*}}
MPIRUN_ARGS=${MPIRUN_ARGS:-} # more mpirun options, e.g. --oversubscribe (more processes than cores)

dry_run=false
if [[ ${1:-} == --dry-run ]]; then
  dry_run=true
  shift
fi
command=(mvcl-pretrain "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
if $dry_run; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi

launcher=(mpirun -np "$NP" --bind-to none)
[[ -n ${HOSTS:-} ]] && launcher+=(--host "$HOSTS")
[[ $(id -u) == 0 ]] && launcher+=(--allow-run-as-root) # e.g. in a container
# Processes on other hosts get only the variables named with -x.
for name in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV TFDS_DATA_DIR XLA_FLAGS JAX_PLATFORMS \
  JAX_COMPILATION_CACHE_DIR; do
  [[ -n ${!name:-} ]] && launcher+=(-x "$name")
done
# shellcheck disable=SC2206 # MPIRUN_ARGS is a list of options
launcher+=($MPIRUN_ARGS)
exec "${launcher[@]}" "${command[@]}"
