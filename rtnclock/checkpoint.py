"""A checkpoint's bytes: the scheduler state, model and RNG states as one buffer, and back.

``ZarrRecorder`` (``store.py``) writes one at a flush; ``resume`` reads it.
A checkpoint holds about a hundred small tensors, and ``torch.save`` spends
~55 us on each (a zip record apiece: 4-7 ms a checkpoint here, on the run's
thread).  Here the object graph is pickled as it is, each tensor as a
reference (storage, offset, shape, stride, dtype) and each distinct storage
once, as raw bytes; the pickler's memo keeps tensors that share a storage
sharing it after :func:`unpack`, as ``torch.save`` does.

Only checkpoints rtnclock itself wrote are read: like
``torch.load(weights_only=False)``, unpickling runs what the bytes name.
"""

from __future__ import annotations

import io
import pickle

import torch

#: What a :func:`pack` buffer starts with (a ``torch.save`` buffer starts ``PK``).
MAGIC = b"rtnclock-checkpoint-1\n"


class _Storage:
    """A storage's bytes and device; made into a torch storage once per unpickling."""

    def __init__(self, device: str, raw):
        self.device, self.raw, self._storage = device, raw, None

    def __reduce__(self):
        return _Storage, (self.device, self.raw)

    def storage(self) -> torch.UntypedStorage:
        if self._storage is None:
            self._storage = torch.from_numpy(self.raw).to(self.device).untyped_storage()
        return self._storage


def _rebuild(storage: _Storage, offset: int, shape: tuple, stride: tuple, dtype: str,
             requires_grad: bool, parameter: bool) -> torch.Tensor:
    s = storage.storage()
    t = torch.empty(0, dtype=getattr(torch, dtype), device=s.device).set_(s, offset, shape, stride)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_() if requires_grad else t


class _Pickler(pickle.Pickler):
    # reducer_override, not persistent_id: the pickler skips it for dicts,
    # lists, tuples and numbers, and a checkpoint holds ~2,000 such objects.
    def __init__(self, file):
        super().__init__(file, protocol=5)
        self._storages: dict[tuple, _Storage] = {}

    def reducer_override(self, obj):
        if type(obj) is not torch.Tensor and type(obj) is not torch.nn.Parameter:
            return NotImplemented
        if obj.layout is not torch.strided or obj.is_quantized or obj.is_conj() or obj.is_neg():
            return NotImplemented                    # torch's own pickling, slower but general
        storage = obj.untyped_storage()
        key = (obj.device, storage.data_ptr(), storage.nbytes())
        held = self._storages.get(key)
        if held is None:
            raw = torch.empty(0, dtype=torch.uint8, device=obj.device).set_(storage).detach()
            held = self._storages[key] = _Storage(str(obj.device), raw.cpu().numpy())
        return _rebuild, (held, obj.storage_offset(), tuple(obj.shape), obj.stride(),
                          str(obj.dtype).removeprefix("torch."), obj.requires_grad,
                          type(obj) is torch.nn.Parameter)


def pack(obj) -> bytes:
    """``obj`` (containers, dataclasses, tensors on any device) as bytes for :func:`unpack`."""
    out = io.BytesIO()
    out.write(MAGIC)
    _Pickler(out).dump(obj)
    return out.getvalue()


def unpack(data: bytes):
    """The object :func:`pack` made ``data`` from, its tensors on the devices they were on.

    Reads ``torch.save`` checkpoints too (what earlier rtnclock versions wrote).
    """
    if not data.startswith(MAGIC):
        return torch.load(io.BytesIO(data), weights_only=False)
    return pickle.loads(memoryview(data)[len(MAGIC):])
