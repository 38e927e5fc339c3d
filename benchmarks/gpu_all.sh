#!/usr/bin/env bash
# The GPU checks of the leaf kernels in one go, on a CUDA machine where rtnclock,
# triton, simpy and zarr import: the equivalence tests (gpu marker, and the
# interpreter ones), `rtnclock run audio_stream --device cuda` with 1,024 streams
# (and the host time of its input, benchmarks/audio_render.py),
# and benchmarks/gpu_kernels.py (float32; "half": its leaf-step table in bfloat16;
# "sweep": its leaf-step tiles). Each step has a time limit, so that one that
# hangs leaves the others' figures; each step's whole output is in LOGDIR/STEP.log.
# The kernel tests run in groups, one process each: a kernel that faults leaves
# its process's CUDA context unusable, and the other groups still report.
#
#     bash benchmarks/gpu_all.sh [LOGDIR] [STEPS]    (PYTHON=... to choose the interpreter;
#                                                     STEPS: e.g. "tests run bench half sweep")
set -u
log=${1:-gpu_logs}
steps=${2:-tests run bench}
py=${PYTHON:-python3}
mkdir -p "$log"
rm -f "$log"/{tests,run,bench,half,sweep}.log              # steps append; start each run afresh
export PYTHONUNBUFFERED=1

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local began=$SECONDS
    timeout "$limit" "$@" >>"$log/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - began)) s (limit $limit s)"
    tail -n 12 "$log/$name.log"
}

want() { [[ " $steps " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$py" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
if want tests; then
    t="$py -m pytest -q -p no:cacheprovider -rs -m"
    step tests 60 $t "not gpu" tests/test_kernels.py
    for group in "leaf_step_gpu and not tf32x3" vector_field_gpu attention_gpu "on_cuda"; do
        step tests 90 $t gpu tests/test_kernels.py -k "$group"
    done
    # Synchronous launches: a fault is reported at the kernel that made it.
    step tests 90 env CUDA_LAUNCH_BLOCKING=1 $t gpu tests/test_kernels.py -k tf32x3
    step tests 120 $t gpu tests/test_cuda.py tests/test_morph.py::test_a_growing_tree_runs_and_trains_on_cuda
fi
if want run; then
    step run 80 "$py" -m rtnclock run audio_stream --device cuda --batch 1024 --duration 2 \
        --out "${TMPDIR:-/tmp}/gpu_audio_stream.zarr" --overwrite --quiet
    # The host's share of that run: the scenario's input for the same streams.
    step run 40 "$py" benchmarks/audio_render.py --batches 1024 --rounds 1
fi
want bench && step bench 270 "$py" benchmarks/gpu_kernels.py
want half && step half 150 "$py" benchmarks/gpu_kernels.py --tables step --dtype bfloat16
want sweep && step sweep 300 "$py" benchmarks/gpu_kernels.py --tables sweep --no-compile
exit 0
