"""Multi-process tests: two ``gloo`` ranks on CPU, started once for the session."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from tests.dist._launch import DistWorkers


@pytest.fixture(scope="session")
def workers():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    pool = DistWorkers()
    pool.start()
    yield pool
    pool.close()


@pytest.fixture(autouse=True)
def _one_thread():
    """The single-process references run in the test process next to the two ranks on a shared 2-core
    machine: intra-op threads only add contention for these tiny models."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
