#!/usr/bin/env bash
# Wheels for running benchmarks/gpu_all.sh on a CUDA machine that has torch,
# torchdiffeq, triton and xarray but no package index: rtnclock itself plus
# simpy, zarr and their compiled dependencies, for that machine's Python.
#
#     bash benchmarks/gpu_offline.sh [DIR] [PYVER]     (defaults: .whl 3.12)
#
# Then, on the GPU machine, from a copy of the repository holding DIR:
#     pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
#     mkdir -p /tmp/w && cp -r pyproject.toml tests benchmarks /tmp/w && cd /tmp/w
#     bash benchmarks/gpu_all.sh LOGDIR "tests run bench"; bash benchmarks/gpu_all.sh LOGDIR2 "half sweep"
# (run from the copy, so that the checkout's rtnclock/ does not shadow the
# installed package, which is the one that holds rtnclock.kernels).
set -eu
dir=${1:-.whl}
py=${2:-3.12}
mkdir -p "$dir"
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    "${plat[@]}" -d "$dir" simpy==4.1.2 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
    google-crc32c==1.9.0 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1
rm -f "$dir"/rtnclock-*.whl
"${PYTHON:-.venv/bin/python}" -m pip wheel -q --no-deps --no-build-isolation . -w "$dir"
ls "$dir"
