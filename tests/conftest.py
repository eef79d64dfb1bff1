"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: small ops are faster so, and on a busy machine idle-waiting
    worker threads make large matrix work (e.g. 2048-d FID) far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
