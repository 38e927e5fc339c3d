"""The tree as data: which slots hold blocks, and who is whose parent.

Level ``k`` has ``C_k = config.slots(k)`` slots; every per-level tensor of a
run is ``[B, C_k, ...]``, so shapes stay static while blocks are born
(mitosis) and removed (apoptosis).  Per slot the topology keeps:

- ``alive``: the slot holds a block;
- ``parent``: its parent's slot at level ``k + 1``, ``role``: which of the
  parent's ``b`` prior rows it reads (a daughter reads her mother's);
- ``mass``: its weight in the parent's pooled coarse-up message.  A block
  starts with mass 1; mitosis halves it between mother and daughter, so the
  parent hears the same mean while the two are still alike;
- ``ids``: a block id, unique over the run (-1 for a free slot), and ``born``,
  its birth time in seconds;
- ``field`` (leaves): which stream leaf it reads; blocks above see the
  mass-weighted mean of their children's sensory fields (``fields``), which
  a block keeps when its children are gone: it still sees its region.

The full ``b``-ary tree with no spare slots (the default) takes the reshape
paths of :mod:`rtnclock.messages`; any other tree takes gathers and
``index_add``.  Topology is shared by the batch: it is model structure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .config import Config
from .messages import block_spin, to_children


@dataclass
class Topology:
    """Slots, links and masses of every level (see the module docstring)."""

    b: int
    n_stream: int                   # leaves the stream feeds
    alive: list[torch.Tensor]       # [C_k] bool
    parent: list[torch.Tensor]      # [C_k] long (the root: 0)
    role: list[torch.Tensor]        # [C_k] long
    mass: list[torch.Tensor]        # [C_k] float64
    ids: list[torch.Tensor]         # [C_k] long, -1 free
    born: list[torch.Tensor]        # [C_k] float64 seconds
    field: torch.Tensor             # [C_0] long stream leaf of each leaf slot
    fields: list[torch.Tensor | None] = field(default_factory=list)  # [C_k, n_stream] (k >= 1)
    next_id: int = 0
    full: bool = True               # the untouched full tree: reshape paths
    n_alive: list[int] = field(default_factory=list)
    _snaps: list = field(default_factory=list, repr=False)

    @classmethod
    def initial(cls, config: Config, device) -> "Topology":
        """The configured full tree in the first ``n_k`` slots of each level."""
        b, K = config.branching, config.K
        alive, parent, role, mass, ids, born = [], [], [], [], [], []
        next_id = 0
        for k in range(config.n_levels):
            n, C = config.blocks(k), config.slots(k)
            i = torch.arange(C, device=device)
            live = i < n
            alive.append(live)
            parent.append(torch.where(live, i // b, 0) if k < K else torch.zeros_like(i))
            role.append(torch.where(live, i % b, 0))
            mass.append(live.double())
            ids.append(torch.where(live, i + next_id, -1))
            born.append(torch.where(live, 0.0, float("nan")).double())
            next_id += n
        full = all(config.slots(k) == config.blocks(k) for k in range(config.n_levels))
        n0 = config.blocks(0)
        top = cls(b=b, n_stream=n0, alive=alive, parent=parent, role=role, mass=mass, ids=ids,
                  born=born, field=torch.where(alive[0], torch.arange(config.slots(0), device=device), 0),
                  next_id=next_id, full=full)
        top.refresh()
        return top

    # ---- message maps -------------------------------------------------
    def pool(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Children (level ``k``) to parents: mass-weighted mean over alive children.

        ``x`` is ``[B, C_k, ...]``; returns ``([B, C_{k+1}, ...], has_children [C_{k+1}])``
        (``None`` on the full tree, where every parent has its ``b`` children).
        """
        if self.full:
            return block_spin(x, self.b), None
        w = (self.mass[k] * self.alive[k]).to(x.dtype)
        C1 = self.alive[k + 1].numel()
        per_block = (1, -1) + (1,) * (x.dim() - 2)          # broadcast over batch and features
        total = x.new_zeros(x.shape[0], C1, *x.shape[2:]).index_add(1, self.parent[k], x * w.view(per_block))
        weight = x.new_zeros(C1).index_add(0, self.parent[k], w)
        return total / weight.clamp_min(torch.finfo(x.dtype).tiny).view(per_block), weight > 0

    def spread(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Parents (level ``k + 1``) to children (level ``k``): each child gets its parent's value."""
        if self.full:
            return to_children(x, self.b)
        return x[:, self.parent[k]]

    def priors(self, k: int, p: torch.Tensor) -> torch.Tensor:
        """Level ``k``'s prior-down output ``[B, C_k * b, d]`` to one prior per child slot of level ``k - 1``."""
        if self.full:
            return p
        B, d = p.shape[0], p.shape[-1]
        return p.reshape(B, -1, self.b, d)[:, self.parent[k - 1], self.role[k - 1]]

    def sensory(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Stream-leaf values ``[B, n_stream, c]`` averaged over each level-``k`` slot's field."""
        if self.full:
            return block_spin(x, self.b**k)
        if k == 0:
            return x[:, self.field]
        return torch.einsum("in,bnc->bic", self.fields[k].to(x.dtype), x)

    def leaf_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[F, B, n_stream, c]`` as each leaf slot reads them ``[F, B, C_0, c]``."""
        return frames if self.full else frames[:, :, self.field]

    # ---- growth -------------------------------------------------------
    def children(self, k: int, i: int) -> torch.Tensor:
        """Alive children slots (level ``k - 1``) of slot ``i`` of level ``k``, in slot order."""
        return ((self.parent[k - 1] == i) & self.alive[k - 1]).nonzero().flatten()

    def free_slot(self, k: int) -> int | None:
        """The first free slot of level ``k`` (None when full)."""
        free = (~self.alive[k]).nonzero().flatten()
        return int(free[0]) if free.numel() else None

    def split(self, k: int, i: int, t: float) -> tuple[int, torch.Tensor] | None:
        """Mitosis of slot ``i``: a daughter in a free slot with half the mass and,
        above the leaves, the second half of the alive children.

        Returns ``(daughter slot, moved children slots)``, or None when no slot
        is free or a block above the leaves has fewer than two children to share.
        """
        j = self.free_slot(k)
        if j is None:
            return None
        moved = torch.zeros(0, dtype=torch.long, device=self.field.device)
        if k > 0:
            kids = self.children(k, i)
            if kids.numel() < 2:
                return None
            moved = kids[kids.numel() // 2:]
        self._writable()
        if k > 0:
            self.parent[k - 1][moved] = j
        else:
            self.field[j] = self.field[i]
        for arr in (self.parent, self.role):
            arr[k][j] = arr[k][i]
        self.mass[k][i] = self.mass[k][j] = self.mass[k][i] / 2
        self.alive[k][j] = True
        self.ids[k][j] = self.next_id
        self.born[k][j] = t
        self.next_id += 1
        self.full = False
        self.refresh()
        return j, moved

    def remove(self, k: int, i: int) -> list[tuple[int, int]]:
        """Apoptosis of slot ``i`` and its whole subtree; returns the removed ``(level, slot)``."""
        self._writable()
        gone = [(k, i)]
        level, slots = k, torch.tensor([i], device=self.field.device)
        while True:
            self._free(level, slots)
            if level == 0:
                break
            slots = (torch.isin(self.parent[level - 1], slots) & self.alive[level - 1]).nonzero().flatten()
            level -= 1
            if slots.numel() == 0:
                break
            gone += [(level, int(s)) for s in slots]
        self.full = False
        self.refresh()
        return gone

    def _free(self, k: int, slots: torch.Tensor) -> None:
        self.alive[k][slots] = False
        self.mass[k][slots] = 0.0
        self.ids[k][slots] = -1
        self.born[k][slots] = float("nan")

    def to(self, device) -> "Topology":
        """This tree on ``device`` (itself if it is there already)."""
        if self.field.device == torch.device(device):
            return self
        moved = dataclasses.replace(self, field=self.field.to(device))
        for name in ("alive", "parent", "role", "mass", "ids", "born", "fields"):
            setattr(moved, name, [None if x is None else x.to(device) for x in getattr(self, name)])
        moved.refresh()
        return moved

    def snapshot(self, k: int) -> tuple[torch.Tensor, ...]:
        """``(alive, block ids, parent ids, birth times)`` of level ``k``; never changed afterwards
        (mutations replace the tensors), so a recorder may hold them."""
        if self._snaps[k] is None:
            self._snaps[k] = (self.alive[k], self.ids[k], self.parent_ids(k), self.born[k])
        return self._snaps[k]

    def parent_ids(self, k: int) -> torch.Tensor:
        """Block id of each slot's parent (-1 for free slots and the root)."""
        if k + 1 >= len(self.ids):
            return torch.full_like(self.ids[k], -1)
        return torch.where(self.alive[k], self.ids[k + 1][self.parent[k]], -1)

    def _writable(self) -> None:
        # Copy on write: snapshots handed out before a mutation stay as they were.
        for name in ("alive", "parent", "role", "mass", "ids", "born"):
            setattr(self, name, [x.clone() for x in getattr(self, name)])
        self.field = self.field.clone()

    def refresh(self) -> None:
        """Recompute alive counts and, off the full tree, the sensory fields above the leaves."""
        self.n_alive = [int(a.sum()) for a in self.alive]
        self._snaps = [None] * len(self.alive)
        if self.full:
            self.fields = [None] * len(self.alive)
            return
        fields: list[torch.Tensor | None] = [None]
        for k in range(1, len(self.alive)):
            w = self.mass[k - 1] * self.alive[k - 1]
            total = torch.zeros(self.alive[k].numel(), self.n_stream, dtype=torch.float64, device=w.device)
            if k == 1:
                total.index_put_((self.parent[0], self.field), w, accumulate=True)
            else:
                total.index_add_(0, self.parent[k - 1], fields[k - 1] * w.unsqueeze(-1))
            weight = torch.zeros_like(total[:, 0]).index_add(0, self.parent[k - 1], w)
            new = total / weight.clamp_min(1e-300).unsqueeze(-1)
            old = self.fields[k] if len(self.fields) > k else None
            if old is not None:                # a block whose children are all gone keeps its region
                new = torch.where((weight == 0).unsqueeze(-1), old, new)
            fields.append(new)
        self.fields = fields
