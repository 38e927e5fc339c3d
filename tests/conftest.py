import pytest
import torch

# The test tensors are tiny: a second intra-op thread only adds wake-up latency.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
