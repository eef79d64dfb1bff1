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


@pytest.fixture(autouse=True)
def _private_stats_cache(tmp_path_factory, monkeypatch, request):
    """Every test gets its own real-statistics cache directory (created only when written):
    ``ifid eval`` caches by default, and a test must never write into the user's cache, nor
    read what another test left there."""
    import hashlib

    name = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    monkeypatch.setenv("IFID_STATS_CACHE", str(tmp_path_factory.getbasetemp() / "stats" / name))
