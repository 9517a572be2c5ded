import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as every rank uses: on a shared 2-core machine two OpenMP threads
    thrash (10-20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
