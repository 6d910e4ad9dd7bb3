"""The NaN/Inf guard's one-read screen: exact on both kernel paths, including the cases where a cheap
screen could be fooled (finite gradients whose sum overflows, +Inf and -Inf in different tensors, low
precision)."""

from __future__ import annotations

import pytest
import torch

import tunefree
import tunefree.optim.kernels as kernels
import tunefree.optim.native as native
from tunefree import NonFiniteError


@pytest.fixture(params=["native", "cpu-sums", "accelerator"])
def screen_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The three checks: the native one (fp32/fp64 on CPU), the per-tensor sums (CPU without the native
    kernels, and bf16/fp16 always) and the foreach max-abs norms (GPU, torch.compile)."""
    if request.param == "native" and native.library() is None:
        pytest.skip("the native CPU kernels could not be built here (no C compiler)")
    if request.param != "native":
        monkeypatch.setattr(native, "ENABLED", False)
    if request.param == "accelerator":
        monkeypatch.setattr(kernels, "per_tensor_kernels", lambda device: False)
    return request.param


def optimizer_with_grads(grads: list[torch.Tensor], **kwargs) -> tunefree.RSGDM:
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return tunefree.RSGDM(params, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_finite_gradients_whose_sum_overflows_are_accepted(screen_path: str, dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    grads = [torch.full((1000,), big, dtype=dtype), torch.full((3,), -big, dtype=dtype)]
    optimizer = optimizer_with_grads(grads)
    assert optimizer._all_finite(torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_entry_anywhere_is_found(screen_path: str, dtype: torch.dtype, bad: float) -> None:
    # (the large tensor is split between threads by the native check: first, middle and last entries)
    for position, index in ((0, 0), (0, -1), (1, -1), (2, 0), (2, 70_001), (2, -1)):
        grads = [torch.randn(700).to(dtype), torch.randn(3, 5).to(dtype), torch.randn(140_003).to(dtype)]
        grads[position].view(-1)[index] = bad
        optimizer = optimizer_with_grads(grads)
        assert not optimizer._all_finite(torch.tensor(1.0))


def test_opposite_infinities_in_two_tensors_are_refused(screen_path: str) -> None:
    grads = [torch.zeros(4), torch.zeros(4)]
    grads[0][1], grads[1][2] = float("inf"), float("-inf")
    optimizer = optimizer_with_grads(grads)
    before = [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]
    with pytest.raises(NonFiniteError):
        optimizer.step()
    after = [p.detach() for group in optimizer.param_groups for p in group["params"]]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not optimizer.state or all(not s for s in optimizer.state.values())


def test_float64_loss_beyond_float32_range_is_finite(screen_path: str) -> None:
    optimizer = optimizer_with_grads([torch.ones(3, dtype=torch.float64)])
    assert optimizer._all_finite(torch.tensor(1e300, dtype=torch.float64))
    assert not optimizer._all_finite(torch.tensor(float("nan"), dtype=torch.float64))


def test_complex_gradients_are_screened(screen_path: str) -> None:
    grads = [torch.randn(5, dtype=torch.complex64), torch.randn(3, dtype=torch.complex64)]
    assert optimizer_with_grads(grads)._all_finite(torch.tensor(1.0))
    grads[1][2] = complex(0.0, float("nan"))
    assert not optimizer_with_grads(grads)._all_finite(torch.tensor(1.0))
