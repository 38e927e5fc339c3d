"""Data-parallel training: two gloo processes launched by torchrun average to the single-process gradient."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.ddp_worker import gradients, setup

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_average_to_the_single_process_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    averaged = torch.load(out)
    single = gradients(*setup(), rank=0, size=1)
    assert averaged.keys() == single.keys() and len(single) > 10
    assert sum(float(g.abs().sum()) for g in single.values()) > 1e-3
    for name, g in single.items():
        torch.testing.assert_close(averaged[name], g, rtol=1e-10, atol=1e-13, msg=name)
