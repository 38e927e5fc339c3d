#!/usr/bin/env bash
# The GPU checks of the leaf kernels in one go, on a CUDA machine where rtnclock,
# triton, simpy and zarr import: the equivalence tests (gpu marker, and the
# interpreter ones), `rtnclock run audio_stream --device cuda` with 1,024 streams,
# and benchmarks/gpu_kernels.py. Each step has a time limit, so that one that
# hangs leaves the others' figures; each step's whole output is in LOGDIR/STEP.log.
#
#     bash benchmarks/gpu_all.sh [LOGDIR]        (PYTHON=... to choose the interpreter)
set -u
log=${1:-gpu_logs}
py=${PYTHON:-python3}
mkdir -p "$log"
export PYTHONUNBUFFERED=1

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local began=$SECONDS
    timeout "$limit" "$@" >"$log/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - began)) s (limit $limit s)"
    tail -n 30 "$log/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$py" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
step tests 150 "$py" -m pytest -q -p no:cacheprovider -rs -m "gpu or not gpu" tests/test_kernels.py \
    tests/test_cuda.py tests/test_morph.py::test_a_growing_tree_runs_and_trains_on_cuda
step run 80 "$py" -m rtnclock run audio_stream --device cuda --batch 1024 --duration 2 \
    --out "${TMPDIR:-/tmp}/gpu_audio_stream.zarr" --overwrite --quiet
step bench 270 "$py" benchmarks/gpu_kernels.py
