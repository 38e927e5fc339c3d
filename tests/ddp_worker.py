"""Run by ``tests/test_ddp.py`` under torchrun: one training step's gradients, averaged by DDP.

Each process takes its shard of one minibatch (``trainer.shard``), steps
through ``trainer.replicate`` (DDP), and process 0 saves the averaged
gradients to ``argv[1]``.
"""

import sys

import torch

from rtnclock.train import RTN
from rtnclock.trainer import TrainOptions, finish, ranks, replicate, shard, step_loss
from tests.problems import test_config


def setup():
    """The model, one minibatch and the options both sides use (float64, fixed seeds)."""
    cfg = test_config(K=2, branching=2, ratio=2.0, gate_bias=(-1.0, 1.0, 2.0), method="rk4", memory_size=2)
    gen = torch.Generator().manual_seed(5)
    frames = torch.randn(8, 12, cfg.blocks(0), cfg.input_dim, generator=gen, dtype=torch.float64)
    labels = torch.arange(8) % 3
    torch.manual_seed(0)
    return RTN(cfg, 3), frames, labels, TrainOptions(penalty="cost", lam=0.5)


def gradients(rtn, frames, labels, options, rank: int, size: int) -> dict:
    """This process's step on its shard; the parameters' gradients after backward."""
    idx = shard(torch.arange(len(labels)), rank, size)
    replica = replicate(rtn)               # held through backward: DDP's hooks live with it
    step_loss(replica, frames[idx], labels[idx], options).backward()
    return {name: p.grad.clone() for name, p in rtn.named_parameters() if p.grad is not None}


if __name__ == "__main__":
    rank, size = ranks()
    grads = gradients(*setup(), rank, size)
    if rank == 0:
        torch.save(grads, sys.argv[1])
    finish()
