"""The simulator on a CUDA device against the same run on the CPU (``gpu`` marker).

On CUDA the leaves go through the fused Triton kernels and the levels through
cuBLAS, so the two runs differ by rounding only. In float64, on a fixed RK4 grid (the
same steps on both), the gate decisions, ticks and events must be the same and
the states agree to 1e-10. Skipped without CUDA; run with ``-m gpu``.
"""

from __future__ import annotations

import pytest
import torch

from rtnclock import simulate
from rtnclock.scenarios import audio_stream
from tests.problems import assert_same_run, pulse_stream, smooth_stream, test_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _assert_same_run(cpu, gpu, atol):
    assert all(h.device.type == "cuda" for h in gpu.final_states()), "a state left the device"
    assert_same_run(gpu, cpu, atol)


@pytest.mark.parametrize("gates", [dict(gate_mode="open", memory_size=4), dict(memory_size=0)])
def test_gated_tree_on_cuda_equals_cpu(gates):
    """A batch of three streams with escalation: every gate open with ring buffers
    (the fused attention on every tick), and free gates that stay mostly shut."""
    cfg = test_config(K=2, escalation_threshold=1.0, method="rk4", **gates)
    stream = smooth_stream(cfg, 0.2, batch=3)
    cpu = simulate(cfg, stream)
    gpu = simulate(cfg.replace(device="cuda"), stream)
    _assert_same_run(cpu, gpu, atol=1e-10)


def test_escalation_trace_on_cuda_equals_cpu():
    cfg = test_config(K=1, branching=2, ratio=4.0, gate_mode=("closed", "open"),
                      escalation_threshold=1.0, method="rk4")
    stream = pulse_stream(cfg, 0.16, start=0.05, stop=0.06, height=3.0)
    cpu = simulate(cfg, stream)
    gpu = simulate(cfg.replace(device="cuda"), stream)
    assert [e.n for e in gpu.events.select({"escalation"})] == [6, 6]    # both leaves, at the pulse
    _assert_same_run(cpu, gpu, atol=1e-10)


def test_audio_stream_on_cuda_equals_cpu():
    """The main scenario's defaults in float64, a batch of four streams, half a second."""
    cfg = audio_stream.default_config().replace(dtype="float64")
    # The scenario streams its features chunk by chunk: one stream per run.
    cpu = simulate(cfg, audio_stream.make_stream(cfg, duration=0.5, batch=4))
    gpu = simulate(cfg.replace(device="cuda"), audio_stream.make_stream(cfg, duration=0.5, batch=4))
    assert gpu.sparsity == pytest.approx(cpu.sparsity, abs=1e-12)
    _assert_same_run(cpu, gpu, atol=1e-10)
