"""Leaf-neuron kernels behind one dispatch point.

``reference`` (plain torch) defines the truth on every device; fused GPU
kernels register here as they arrive and are chosen for CUDA tensors. The
Triton kernels (``triton_leaf``) register on the first CUDA request, and only
where Triton imports and CUDA is available, so a CPU-only install never needs
Triton. Tests reach them directly: ``from rtnclock.kernels import triton_leaf``
(on CPU tensors with ``TRITON_INTERPRET=1`` set before that import).
"""

import functools

import torch

from . import reference

_FUSED: dict[str, dict[str, object]] = {"cuda": {}}

_TRITON_KERNELS = ("leaf_attention", "leaf_step", "leaf_vector_field")


@functools.cache
def _register_triton() -> None:
    """Put the Triton kernels in ``_FUSED["cuda"]`` if they can run there (once)."""
    if not torch.cuda.is_available():
        return
    try:
        from . import triton_leaf
    except ImportError:  # no triton: the reference serves CUDA too
        return
    for name in _TRITON_KERNELS:
        _FUSED["cuda"].setdefault(name, getattr(triton_leaf, name))


def get(name: str, device_type: str):
    """The kernel ``name`` for tensors on ``device_type`` (``cpu`` or ``cuda``)."""
    if device_type == "cuda":
        _register_triton()
    fused = _FUSED.get(device_type, {})
    if name in fused:
        return fused[name]
    try:
        return getattr(reference, name)
    except AttributeError:
        raise KeyError(f"no leaf kernel named {name!r}") from None


__all__ = ["get", "reference"]
