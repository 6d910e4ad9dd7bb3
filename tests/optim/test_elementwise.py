"""Closed forms and special cases of SMES, AGD and RSGDM (the generic contract is in test_contract.py)."""

from __future__ import annotations

import io
import math

import pytest
import torch

import tunefree.optim.kernels as kernels
from tunefree import AGD, RSGDM, SMES, AlphaSchedule

from .helpers import batches, make_closure, make_data, make_model, max_param_diff

STEPS = 30


def run_pair(make_a, make_b, steps: int = STEPS, dtype=torch.float64, tol: float = 1e-12) -> tuple:
    """Train two copies of the test model side by side; assert they stay within ``tol``."""
    model_a, model_b = make_model(dtype=dtype), make_model(dtype=dtype)
    opt_a, opt_b = make_a(model_a.parameters()), make_b(model_b.parameters())
    x, y = make_data(dtype=dtype)
    for step in range(steps):
        batch = batches(step, x, y)
        opt_a.step(make_closure(model_a, opt_a, batch))
        opt_b.step(make_closure(model_b, opt_b, batch))
        assert max_param_diff(model_a, model_b) <= tol, f"step {step + 1}"
    return opt_a, opt_b


class ManualLoop:
    """A minimal optimizer shell for the hand-written closed forms below: ``step(closure)`` calls
    ``closure``, then ``rule(param, grad, state, t)`` per parameter."""

    def __init__(self, params, rule) -> None:
        self.params, self.rule, self.state, self.t = list(params), rule, {}, 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        self.t += 1
        for p in self.params:
            if p.grad is not None:
                self.rule(p, p.grad, self.state.setdefault(id(p), {}), self.t)
        return loss


# ---------------------------------------------------------------------------------------------- SMES
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_smes_half_is_adam(weight_decay: float) -> None:
    run_pair(lambda p: SMES(p, lr=1e-2, alpha=0.5, weight_decay=weight_decay),
             lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=weight_decay, foreach=False))


def test_smes_half_decoupled_is_adamw() -> None:
    run_pair(lambda p: SMES(p, lr=1e-2, alpha=0.5, weight_decay=0.1, decoupled_weight_decay=True),
             lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False))


def test_smes_zero_is_bias_corrected_ema_sgd_momentum() -> None:
    lr, beta, eps = 0.5, 0.9, 1e-8

    def ema_sgd(p, g, state, t):
        state["m"] = beta * state.get("m", torch.zeros_like(p)) + (1 - beta) * g
        p.sub_(lr / (1 + eps) * state["m"] / (1 - beta**t))

    run_pair(lambda p: SMES(p, lr=lr, alpha=0.0, eps=eps), lambda p: ManualLoop(p, ema_sgd))


@pytest.mark.parametrize("form", ["schedule", "tuple", "dict", "callable"])
def test_smes_schedule_forms_agree_and_report_alpha(form: str) -> None:
    schedule = AlphaSchedule.linear(0.5, 0.0, 20)
    alpha = {"schedule": schedule, "tuple": ("linear", 0.5, 0.0, 20),
             "dict": {"kind": "linear", "start": 0.5, "end": 0.0, "steps": 20},
             "callable": lambda k: 0.5 - 0.5 * min(k, 20) / 20}[form]
    opt, _ = run_pair(lambda p: SMES(p, lr=1e-2, alpha=alpha),
                      lambda p: SMES(p, lr=1e-2, alpha=schedule), steps=25, tol=1e-15)
    assert float(opt.stats["alpha"]) == pytest.approx(0.0)
    assert AlphaSchedule.cosine(0.5, 0.1, 10)(5) == pytest.approx(0.3)


def test_smes_schedule_resumes_exactly_mid_schedule() -> None:
    schedule = AlphaSchedule.cosine(0.5, 0.1, 30)
    model = make_model()
    optimizer = SMES(model.parameters(), lr=1e-2, alpha=schedule)
    x, y = make_data()
    for step in range(12):
        optimizer.step(make_closure(model, optimizer, batches(step, x, y)))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    for step in range(12, 24):
        optimizer.step(make_closure(model, optimizer, batches(step, x, y)))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # the schedule travels as a plain tuple
    resumed_model = make_model(seed=5)
    resumed_model.load_state_dict(saved["model"])
    resumed = SMES(resumed_model.parameters(), lr=1e-2, alpha=0.25)  # alpha comes from the checkpoint
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.param_groups[0]["alpha_step"] == 12
    for step in range(12, 24):
        resumed.step(make_closure(resumed_model, resumed, batches(step, x, y)))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed_model.parameters()))
    assert torch.equal(optimizer.stats["alpha"], resumed.stats["alpha"])
    assert float(resumed.stats["alpha"]) == pytest.approx(schedule(24))


def test_smes_alpha_range_and_flag() -> None:
    params = list(make_model().parameters())
    with pytest.raises(ValueError, match="alpha"):
        SMES(params, alpha=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        SMES(params, alpha=("linear", 0.5, 0.9, 10))
    with pytest.raises(ValueError, match="alpha"):
        SMES(params, alpha=("exponential", 0.5, 0.1, 10))
    SMES(params, alpha=0.9, allow_any_alpha=True)


@pytest.mark.parametrize("partial", [0.125, 0.25, 0.5])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_smes_padam_compat_matches_pytorch_optimizer(partial: float, weight_decay: float) -> None:
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    run_pair(lambda p: SMES(p, lr=1e-2, alpha=partial, weight_decay=weight_decay, padam_compat=True),
             lambda p: pytorch_optimizer.PAdam(p, lr=1e-2, partial=partial, weight_decay=weight_decay,
                                               foreach=False))


# ----------------------------------------------------------------------------------------------- AGD
def test_agd_huge_delta_is_sgd_momentum_with_lr_over_delta() -> None:
    lr, beta1, delta = 1e-2, 0.9, 1e6

    def sgd_momentum(p, g, state, t):
        state["m"] = beta1 * state.get("m", torch.zeros_like(p)) + (1 - beta1) * g
        p.sub_(lr / (delta * (1 - beta1**t)) * state["m"])

    # scale the problem so that the SGD steps (~lr/delta) are not lost below 1e-12
    opt, _ = run_pair(lambda p: AGD(p, lr=lr * 1e4, delta=delta), lambda p: ManualLoop(p, lambda *a: None),
                      tol=math.inf)
    assert float(opt.stats["frac_sgd_like"]) == 1.0
    run_pair(lambda p: AGD(p, lr=lr, delta=delta),
             lambda p: ManualLoop(p, sgd_momentum), tol=1e-18)


def test_agd_tiny_delta_is_never_sgd_like() -> None:
    torch.manual_seed(0)
    params = [torch.zeros(50, 20, dtype=torch.float64, requires_grad=True)]
    optimizer = AGD(params, lr=1e-3, delta=1e-14)
    for _ in range(20):
        params[0].grad = torch.randn(50, 20, dtype=torch.float64)  # noisy gradients
        optimizer.step()
        assert float(optimizer.stats["frac_sgd_like"]) == 0.0


def test_agd_frac_sgd_like_matches_reference_count() -> None:
    from .references_elementwise import AGDReference

    model, ref_model = make_model(), make_model()
    optimizer = AGD(model.parameters(), lr=1e-2, delta=3e-3)
    reference = AGDReference([{"params": list(ref_model.parameters())}], lr=1e-2, delta=3e-3)
    x, y = make_data()
    seen = set()
    for step in range(STEPS):
        batch = batches(step, x, y)
        optimizer.step(make_closure(model, optimizer, batch))
        reference.step(make_closure(ref_model, torch.optim.SGD(ref_model.parameters(), lr=0.0), batch))
        assert float(optimizer.stats["frac_sgd_like"]) == pytest.approx(reference.frac_sgd_like, abs=1e-12)
        seen.add(round(reference.frac_sgd_like, 6))
    assert len(seen) > 2, "the test should see the switch move"


# --------------------------------------------------------------------------------------------- RSGDM
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_rsgdm_without_correction_is_torch_sgd_momentum_scaled(weight_decay: float) -> None:
    """SGD(lr=a, momentum=b) == RSGDM(lr=a/(1-b), beta=b, correction=False) exactly, first step included:
    torch's buf_1 = g_1 is the zero-started sum, and the EMA n_t = (1-b) buf_t."""
    a, b = 0.1, 0.9
    run_pair(lambda p: RSGDM(p, lr=a / (1 - b), beta=b, weight_decay=weight_decay, correction=False),
             lambda p: torch.optim.SGD(p, lr=a, momentum=b, weight_decay=weight_decay, foreach=False))


def test_rsgdm_without_correction_vs_dampened_torch_sgd() -> None:
    """SGD(momentum=b, dampening=b) starts its buffer at g_1: buf_t = n_t + b^t g_1."""
    lr, b = 0.3, 0.9

    def dampened_from_ema(p, g, state, t):
        if t == 1:
            state["g1"], state["n"] = g.clone(), torch.zeros_like(p)
        state["n"] = b * state["n"] + (1 - b) * g
        p.sub_(lr * (state["n"] + b**t * state["g1"]))

    run_pair(lambda p: torch.optim.SGD(p, lr=lr, momentum=b, dampening=b, foreach=False),
             lambda p: ManualLoop(p, dampened_from_ema))


@pytest.mark.parametrize("first_step", ["zero_diff", "zero_prev"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_rsgdm_two_buffer_form_equals_three_buffer_form(first_step: str, weight_decay: float) -> None:
    lr, beta = 0.5, 0.9

    def three_buffers(p, g, state, t):
        g = g + weight_decay * p
        if t == 1:
            state["m"], state["z"] = torch.zeros_like(p), torch.zeros_like(p)
            state["g_prev"] = g.clone() if first_step == "zero_diff" else torch.zeros_like(p)
        state["m"] = beta * state["m"] + (1 - beta) * g
        state["z"] = beta * state["z"] + (1 - beta) * (g - state["g_prev"])
        p.sub_(lr * (state["m"] + beta * state["z"]))
        state["g_prev"] = g.clone()

    run_pair(lambda p: RSGDM(p, lr=lr, beta=beta, weight_decay=weight_decay, first_step=first_step),
             lambda p: ManualLoop(p, three_buffers))


def test_rsgdm_matches_undampened_rectified_momentum_at_lr_over_one_minus_beta() -> None:
    a, b = 0.05, 0.9

    def undampened(p, g, state, t):
        if t == 1:
            state["n"], state["g_prev"] = torch.zeros_like(p), torch.zeros_like(p)
        state["n"] = b * state["n"] + (1 + b) * g - b * state["g_prev"]
        p.sub_(a * state["n"])
        state["g_prev"] = g.clone()

    run_pair(lambda p: RSGDM(p, lr=a / (1 - b), beta=b, first_step="zero_prev"),
             lambda p: ManualLoop(p, undampened))


# ------------------------------------------------------------------------------------ CPU blocking
@pytest.mark.parametrize("make", [
    lambda p: SMES(p, lr=1e-2, alpha=0.3, weight_decay=0.1),
    lambda p: SMES(p, lr=1e-2, alpha=0.25, padam_compat=True),
    lambda p: AGD(p, lr=1e-2, delta=1e-2, amsgrad=True, clip=0.5, weight_decay=0.1),
    lambda p: AGD(p, lr=1e-2, delta=1e-2, decoupled_weight_decay=False, weight_decay=0.1),
    lambda p: RSGDM(p, lr=0.5, weight_decay=0.1),
], ids=["smes", "smes_padam", "agd_clip_amsgrad", "agd_coupled", "rsgdm"])
def test_cache_blocked_kernels_equal_whole_tensor_kernels(make, monkeypatch) -> None:
    """Cutting tensors into blocks (slices of 7 elements, across tensor boundaries) changes nothing but
    rounding (short slices run the scalar tails of the vectorised kernels: pow differs in the last bit)."""
    models = [make_model(), make_model()]
    optimizers = [make(m.parameters()) for m in models]
    x, y = make_data()
    for step in range(10):
        for model, optimizer, block in zip(models, optimizers, (7, None)):
            monkeypatch.setattr(kernels, "CPU_BLOCK_NUMEL", block)
            optimizer.step(make_closure(model, optimizer, batches(step, x, y)))
    assert max_param_diff(*models) <= 1e-12
    for key in optimizers[0].stats:
        assert float(optimizers[0].stats[key]) == pytest.approx(float(optimizers[1].stats[key]), abs=1e-12)


def test_cache_blocks_cover_every_element_once() -> None:
    tensors = [torch.zeros(10), torch.zeros(3, 4), torch.zeros(()), torch.zeros(2, 3).t()]
    scalars = [torch.tensor(float(i)) for i in range(len(tensors))]
    for block in kernels.cache_blocks([tensors, scalars], 5):
        # contiguous tensors are cut to the block size; a non-contiguous one is kept whole
        assert all(t.numel() <= 5 for t in block[0] if t.is_contiguous())
        for t, s in zip(*block):
            t.add_(1.0 + s)
    for i, t in enumerate(tensors):
        assert torch.equal(t, torch.full_like(t, 1.0 + i))
