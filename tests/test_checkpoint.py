"""A checkpoint's bytes (rtnclock.checkpoint): what unpack gives back is what pack was given."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest
import torch

from rtnclock.checkpoint import MAGIC, pack, unpack


@dataclass
class _Level:
    h: torch.Tensor
    pending: dict | None = None
    cost: float = 0.0
    notes: list = field(default_factory=list)


def _bits(x: torch.Tensor) -> bytes:
    return x.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert type(a) is type(b)
    assert (a.dtype, a.shape, a.stride(), a.storage_offset(), a.requires_grad, a.device) == \
           (b.dtype, b.shape, b.stride(), b.storage_offset(), b.requires_grad, b.device)
    assert _bits(a) == _bits(b)


def test_round_trip_keeps_values_bit_for_bit_and_layout():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    x[0, 0] = float("nan")
    x[0, 1] = -0.0
    cases = {
        "f64": x, "f32": torch.randn(3, 4, generator=g), "bf16": torch.randn(6, generator=g).bfloat16(),
        "bool": torch.rand(4, 4, generator=g) > 0.5, "i64": torch.arange(-3, 9), "u8": g.get_state(),
        "transposed": x.t(), "strided": x[1::2, ::3], "empty": torch.empty(0, 3), "scalar": torch.tensor(2.5),
        "expanded": torch.arange(3.0).expand(4, 3),
    }
    back = unpack(pack(cases))
    assert back.keys() == cases.keys()
    for name in cases:
        _same(cases[name], back[name])


def test_views_share_their_storage_after_unpacking():
    base = torch.zeros(4, 3)
    row, col = base[1], base[:, 2]
    state = _Level(h=base, pending={"h": row, "col": col}, cost=1.5, notes=["a", 2])
    back = unpack(pack(state))
    assert isinstance(back, _Level) and back.cost == 1.5 and back.notes == ["a", 2]
    back.h[1, 2] = 7.0                                  # one write, seen through every view
    assert float(back.pending["h"][2]) == 7.0 and float(back.pending["col"][1]) == 7.0
    assert float(base[1, 2]) == 0.0                     # and not through the original


def test_gradient_flags_and_parameters_survive():
    p = torch.nn.Parameter(torch.randn(3, 2))
    leaf = torch.ones(2, requires_grad=True)
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    back = unpack(pack({"p": p, "leaf": leaf, "frozen": frozen, "sd": torch.nn.Linear(2, 2).state_dict()}))
    _same(p, back["p"])
    _same(leaf, back["leaf"])
    _same(frozen, back["frozen"])
    assert back["leaf"].is_leaf
    assert list(back["sd"]) == ["weight", "bias"]


def test_tensors_it_does_not_take_apart_go_through_torch():
    sparse = torch.eye(3).to_sparse()
    back = unpack(pack({"s": sparse, "conj": torch.tensor([1 + 2j]).conj()}))
    assert torch.equal(back["s"].to_dense(), torch.eye(3))
    assert complex(back["conj"].resolve_conj()[0]) == 1 - 2j


def test_reads_torch_save_checkpoints_and_writes_its_own_format():
    obj = {"h": torch.arange(6.0).reshape(2, 3), "n": 4}
    old = io.BytesIO()
    torch.save(obj, old)
    back = unpack(old.getvalue())
    _same(obj["h"], back["h"])
    assert back["n"] == 4
    assert pack(obj).startswith(MAGIC)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_tensors_come_back_on_cuda():
    x = torch.randn(4, 4, device="cuda")
    back = unpack(pack({"x": x, "v": x[1]}))
    assert back["x"].is_cuda and torch.equal(back["x"], x)
    back["x"][1, 0] = 9.0
    assert float(back["v"][0]) == 9.0
