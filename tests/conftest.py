"""Suite-wide settings, and ``--device`` for running the optimizer contract on a GPU."""

import pytest
import torch

# The test models are tiny: intra-op threads only add contention on a small shared machine.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device", default="cpu",
        help="device of the optimizer tests' models and data (tests/optim, tests/test_amp.py): cpu (default), "
             "cuda, cuda:1, ...",
    )


def pytest_configure(config: pytest.Config) -> None:
    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: torch sees no CUDA device here")
    from .optim import helpers

    helpers.DEVICE = device
