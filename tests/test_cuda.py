"""What only a GPU can show: the same numbers as on the CPU, checkpoints that change devices, and steps
that never wait for the device (skipped without CUDA).

The rest of the optimizer contract runs on a GPU with ``pytest tests/optim tests/test_amp.py --device cuda``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from .optim.cases import CASES, Case
from .optim.helpers import (
    batches,
    checkpoint_and_resume,
    clone_model,
    make_closure,
    make_data,
    make_model,
    max_param_diff,
    train,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    return clone_model(model).to(CPU)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_follows_the_cpu(case: Case) -> None:
    """float64, 30 steps: the GPU path (foreach kernels, scalars on the device) gives the CPU's numbers up to
    the rounding of a different reduction order."""
    cpu_model = make_model(device=CPU)
    gpu_model = clone_model(cpu_model).to(CUDA)
    train(cpu_model, case.cls(cpu_model.parameters(), **case.train_kwargs), 30)
    train(gpu_model, case.cls(gpu_model.parameters(), **case.train_kwargs), 30)
    assert max_param_diff(cpu_model, cpu_copy(gpu_model)) <= 1e-9


@pytest.mark.parametrize("source,target", [(CUDA, CPU), (CPU, CUDA)], ids=["cuda-to-cpu", "cpu-to-cuda"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_checkpoint_changes_devices(case: Case, source: torch.device, target: torch.device) -> None:
    """A checkpoint loaded as saved (no map_location) into a model on the other device: every state tensor
    lands beside its parameter (torch itself leaves "step" entries where they were saved) and training
    continues as it would have on the source device."""
    model, moved, resumed = checkpoint_and_resume(case.cls, case.train_kwargs, source=source, target=target)
    for param in moved.parameters():
        for key, value in resumed.state[param].items():
            if isinstance(value, torch.Tensor):
                assert value.device == param.device, f"state {key!r} stayed on {value.device}"
    for key, value in resumed.global_state.items():
        assert value.device.type == target.type, f"global state {key!r} stayed on {value.device}"
    train(moved, resumed, 10, start=10)
    assert max_param_diff(cpu_copy(model), cpu_copy(moved)) <= 1e-9


def count_synchronisations(optimizer, model, data, steps: range) -> int:
    """Host synchronisations during ``steps`` optimizer steps (torch's sync debug mode, one warning each)."""
    x, y = data
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in steps:
                optimizer.step(make_closure(model, optimizer, batches(step, x, y)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # (torch also warns once per process that the debug mode is a prototype: not a synchronisation)
    return sum("called a synchronizing CUDA operation" in str(w.message) for w in caught)


@pytest.mark.parametrize("nonfinite,per_step", [("off", 0), ("raise", 1), ("skip", 1)])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_host_synchronisations_per_step(case: Case, nonfinite: str, per_step: int) -> None:
    """The documented cost: no host synchronisation in a step with the NaN/Inf check off, exactly one with
    it on. Counted with the model's own forward and backward in the loop, which must not sync either."""
    model = make_model(dtype=torch.float32, device=CUDA)
    data = make_data(dtype=torch.float32, device=CUDA)
    optimizer = case.cls(model.parameters(), nonfinite=nonfinite, **case.train_kwargs)
    train(model, optimizer, 2, data=data)  # lazy state creation happens here
    assert count_synchronisations(optimizer, model, data, range(2, 6)) == 4 * per_step
