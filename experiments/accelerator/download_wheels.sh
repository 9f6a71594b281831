#!/usr/bin/env bash
# Downloads the wheels the accelerator image lacks (Python 3.12, manylinux x86_64) into .whl/ at
# the repository root (ignored by git; the device call carries it: carry [".whl"]).
#
# The device image has jax/jaxlib 0.11 with CUDA, flax, optax, orbax-checkpoint, chex, numpy,
# torch and torchvision, but not the rest of mvcl's training stack: ml-collections, grain,
# array_record, tensorflow-datasets and what it needs beyond the image (tensorflow-metadata,
# googleapis-common-protos, promise, immutabledict, simple_parsing, docstring-parser, toml,
# termcolor, dm-tree, importlib_resources), dm-pix and portpicker. The versions are those this
# project is tested with on the CPU. One version of each: two wheels of one name stop the install.
#
#   bash experiments/accelerator/download_wheels.sh [DEST]     # DEST defaults to .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
mkdir -p "$DEST"
WHEELS=(
    ml_collections==1.1.0
    grain==0.2.18
    array_record==0.8.6
    tensorflow-datasets==4.9.10
    tensorflow-metadata==1.21.0
    googleapis-common-protos==1.76.0
    immutabledict==4.3.1
    simple_parsing==0.1.9
    docstring_parser==0.18.0
    toml==0.10.2
    termcolor==3.3.0
    dm-tree==0.1.10
    importlib_resources==7.1.0
    dm-pix==0.4.5
    portpicker==1.6.0
)
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"
# promise 2.3 (a tensorflow-datasets requirement) is published as a source archive only: build
# its pure-Python wheel here.
if ! ls "$DEST"/promise-2.3-*.whl >/dev/null 2>&1; then
    python3 -m pip wheel --no-deps --no-build-isolation -w "$DEST" promise==2.3
fi
ls -l "$DEST"
du -sh "$DEST"
