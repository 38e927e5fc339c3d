"""Leaf-neuron kernels behind one dispatch point.

``reference`` (plain torch) defines the truth on every device; fused GPU
kernels register here as they arrive and are chosen for CUDA tensors.
"""

from . import reference

_FUSED: dict[str, dict[str, object]] = {"cuda": {}}


def get(name: str, device_type: str):
    """The kernel ``name`` for tensors on ``device_type`` (``cpu`` or ``cuda``)."""
    fused = _FUSED.get(device_type, {})
    if name in fused:
        return fused[name]
    try:
        return getattr(reference, name)
    except AttributeError:
        raise KeyError(f"no leaf kernel named {name!r}") from None


__all__ = ["get", "reference"]
