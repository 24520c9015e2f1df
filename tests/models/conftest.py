import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    # These tests run tiny tensors; intra-op threads only add contention on a shared CI box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
