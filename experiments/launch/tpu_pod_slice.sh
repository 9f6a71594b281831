#!/usr/bin/env bash
# mvcl-pretrain on a Cloud TPU pod slice (spot), data and workdir in a Cloud Storage bucket.
#
# The same mvcl-pretrain command runs on every worker of the slice; JAX finds the slice's
# workers in the TPU VM's metadata and joins them with jax.distributed (README, "Clusters"). The
# workdir is in the bucket itself (--workdir=gs://..., the gcs extra: checkpoints, logs and the
# lock object go there through etils.epath and orbax). The data set is read in one of two ways
# (DATA_ACCESS):
#   copy   --config.dataset.data_dir=$BUCKET/tensorflow_datasets: every worker copies the data set
#          to its own disk first ($MVCL_DATA_CACHE, default ~/.cache/mvcl/data; only what is
#          missing or changed) and reads the copy (mvcl.data.mirror; clusters guide, "Data sets
#          in a bucket"). The worker's disk must hold the data set.
#   mount  a Cloud Storage FUSE mount of the bucket at /mnt/bucket on every worker, read in place:
#          for data sets larger than the TPU VM's boot disk (100 GB), such as ImageNet (156 GiB);
#          the default for the imagenet configs, copy for the others.
#
#   export TPU_NAME=mvcl-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 BUCKET=gs://my-bucket
#   experiments/launch/tpu_pod_slice.sh wheel     # build mvcl's wheel here, copy it to the bucket
#   experiments/launch/tpu_pod_slice.sh create    # the spot slice
#   experiments/launch/tpu_pod_slice.sh install   # on every worker: jax[tpu], mvcl (, the mount)
#   experiments/launch/tpu_pod_slice.sh train     # start mvcl-pretrain on every worker
#   experiments/launch/tpu_pod_slice.sh logs      # follow worker 0's output
#   experiments/launch/tpu_pod_slice.sh resume    # after a preemption: recreate, install, train
#   experiments/launch/tpu_pod_slice.sh delete
#   experiments/launch/tpu_pod_slice.sh dry-run   # print the mvcl command, start nothing
#
# The data set must be prepared as tfds ArrayRecord in $BUCKET/tensorflow_datasets (see
# mvcl.data; mvcl-import --data_dir=$BUCKET/tensorflow_datasets imports your own images there). Arguments after the step go to mvcl-pretrain (e.g. train --config.num_epochs=20).
# Preemption: a preempted spot slice shuts its VMs down, which sends SIGTERM to the processes;
# mvcl saves a checkpoint (every worker the same step) and exits. The slice is then PREEMPTED
# (`gcloud compute tpus tpu-vm list`): `resume` deletes it, creates it again and runs the same
# command, which continues from the newest checkpoint in the bucket. A save cut short by the
# shutdown loses only the steps since the previous checkpoint (config.checkpoint_every_steps).
set -euo pipefail

TPU_NAME=${TPU_NAME:-mvcl-pod}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
BUCKET=${BUCKET:-gs://my-mvcl-bucket}
CONFIG=${CONFIG:-imagenet1k}
MOUNT=/mnt/bucket
RUN=${RUN:-${CONFIG%%:*}}
case $CONFIG in
  imagenet*) DATA_ACCESS=${DATA_ACCESS:-mount} ;;
  *) DATA_ACCESS=${DATA_ACCESS:-copy} ;;
esac
case $DATA_ACCESS in
  copy) DATA_DIR=$BUCKET/tensorflow_datasets ;;
  mount) DATA_DIR=$MOUNT/tensorflow_datasets ;;
  *) echo "DATA_ACCESS must be copy or mount, got $DATA_ACCESS" >&2; exit 2 ;;
esac

step=${1:-}
shift || true
pretrain=(mvcl-pretrain "--config=$CONFIG" "--workdir=$BUCKET/runs/$RUN"
  "--config.dataset.data_dir=$DATA_DIR" "$@")
printf -v pretrain_line '%q ' "${pretrain[@]}"
pretrain_line=${pretrain_line% }

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

case $step in
  dry-run)
    echo "$pretrain_line"
    ;;
  wheel)
    pip wheel --no-deps -w dist "$(dirname "$0")/../.."
    gcloud storage cp dist/mvcl-*.whl "$BUCKET/wheels/"
    ;;
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME" --spot
    ;;
  install)
    mount=""
    if [[ $DATA_ACCESS == mount ]]; then
      mount="curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
        | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] \
https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" \
        | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
      sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT
      mountpoint -q $MOUNT || gcsfuse --implicit-dirs --rename-dir-limit=1000000 \
        ${BUCKET#gs://} $MOUNT"
    fi
    on_all_workers "set -e
      $mount
      gcloud storage cp '$BUCKET/wheels/mvcl-*.whl' /tmp/
      pip install -q 'jax[tpu]' \"\$(ls /tmp/mvcl-*.whl)[train,gcs]\""
    ;;
  train)
    # detached from the ssh session, so that it runs on when gcloud returns
    on_all_workers "export PATH=\$HOME/.local/bin:\$PATH
      setsid nohup $pretrain_line > \$HOME/mvcl-pretrain.log 2>&1 < /dev/null &"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
      --command="tail -f \$HOME/mvcl-pretrain.log"
    ;;
  resume)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
    "$0" create && "$0" install && "$0" train "$@"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
    ;;
  *)
    echo "usage: $0 dry-run|wheel|create|install|train|logs|resume|delete [mvcl-pretrain arguments]" >&2
    exit 2
    ;;
esac
