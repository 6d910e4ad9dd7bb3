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
