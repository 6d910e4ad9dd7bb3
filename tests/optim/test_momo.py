"""MoMo / MoMo-Adam: closed forms, the authors' package, and the three ways a loss reaches step()."""

from __future__ import annotations

import pytest
import torch

from tunefree import MoMo, MoMoAdam

from .helpers import batches, clone_model, make_closure, make_data, make_model, max_param_diff

MINUS_INF = -1e30  # a lower bound so low that the cap lr is always the step size


def run_pair(model_a, opt_a, model_b, opt_b, steps: int, scheduler_pair=None) -> float:
    """Train two models in lockstep on the same batches; return the largest parameter difference seen."""
    x, y = make_data()
    worst = 0.0
    for step in range(steps):
        batch = batches(step, x, y)
        opt_a.step(make_closure(model_a, opt_a, batch))
        opt_b.step(make_closure(model_b, opt_b, batch))
        if scheduler_pair:
            for scheduler in scheduler_pair:
                scheduler.step()
        worst = max(worst, max_param_diff(model_a, model_b))
    return worst


def test_momo_without_lower_bound_is_ema_sgd_momentum() -> None:
    model = make_model()
    twin = clone_model(model)
    ours = MoMo(model.parameters(), lr=0.05, beta=0.9, lower_bound=MINUS_INF)
    torch_sgd = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, dampening=0.9)
    assert run_pair(model, ours, twin, torch_sgd, 30) <= 1e-12


def test_momo_adam_without_lower_bound_is_adam() -> None:
    model = make_model()
    twin = clone_model(model)
    ours = MoMoAdam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, lower_bound=MINUS_INF)
    torch_adam = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    assert run_pair(model, ours, twin, torch_adam, 30) <= 1e-12


def test_scheduler_scales_the_cap() -> None:
    """With the cap always active, a scheduled MoMo is scheduled EMA SGD-momentum."""
    model = make_model()
    twin = clone_model(model)
    ours = MoMo(model.parameters(), lr=0.1, lower_bound=MINUS_INF)
    torch_sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, dampening=0.9)
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20) for o in (ours, torch_sgd)]
    assert run_pair(model, ours, twin, torch_sgd, 20, schedulers) <= 1e-12


def test_first_step_closed_form_with_weight_decay() -> None:
    """f(x) = sum(x^2), x = [1, 2, 3], lr = 1, wd = 0.1: tau = 0.225 and x = [0.5, 1.0, 1.5]; then tau = 0."""
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    optimizer = MoMo([x], lr=1.0, weight_decay=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    torch.testing.assert_close(x.detach(), torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64), rtol=0, atol=1e-15)
    assert float(optimizer.stats["tau"]) == pytest.approx(0.225, abs=1e-15)
    optimizer.step(closure)
    assert float(optimizer.stats["tau"]) == 0.0  # truncation: only the weight-decay division acts
    torch.testing.assert_close(x.detach(), torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64) / 1.1)


def test_zero_gradient_takes_no_step() -> None:
    """||d||^2 = 0 gives tau = 0 (guarded), not NaN."""
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = MoMo([x])
    x.grad = torch.zeros_like(x)
    optimizer.step(loss=torch.tensor(1.0))
    assert float(optimizer.stats["tau"]) == 0.0
    assert torch.equal(x.detach(), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("ours,reference_name,kwargs", [
    (MoMo, "Momo", dict(lr=1.0)),
    (MoMo, "Momo", dict(lr=0.5, weight_decay=0.01)),
    (MoMo, "Momo", dict(lr=1.0, estimate_lower_bound=True)),
    (MoMoAdam, "MomoAdam", dict(lr=1e-2)),
    (MoMoAdam, "MomoAdam", dict(lr=1e-2, weight_decay=0.01)),
    (MoMoAdam, "MomoAdam", dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)),
    (MoMoAdam, "MomoAdam", dict(lr=1e-2, estimate_lower_bound=True)),
])
def test_matches_the_authors_package(ours, reference_name, kwargs) -> None:
    """Cross-check against momo-opt (PyPI) in float64 on a small MLP (test-only dependency)."""
    momo_opt = pytest.importorskip("momo")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # momo-opt keeps some scalars in the default dtype
    try:
        model = make_model()
        twin = clone_model(model)
        reference_only = ("estimate_lower_bound", "decoupled_weight_decay")
        reference_kwargs = {k: v for k, v in kwargs.items() if k not in reference_only}
        if kwargs.get("estimate_lower_bound"):
            reference_kwargs["use_fstar"] = True
        if "decoupled_weight_decay" in kwargs:
            reference_kwargs["divide"] = not kwargs["decoupled_weight_decay"]
        reference = getattr(momo_opt, reference_name)(twin.parameters(), **reference_kwargs)
        optimizer = ours(model.parameters(), **kwargs)
        x, y = make_data()
        for step in range(40):
            batch = batches(step, x, y)
            optimizer.step(make_closure(model, optimizer, batch))
            loss = make_closure(twin, reference, batch)()
            reference.step(loss=loss)
        assert max_param_diff(model, twin) <= 1e-10
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("cls", [MoMo, MoMoAdam])
def test_three_ways_to_pass_the_loss_agree(cls) -> None:
    models = [make_model() for _ in range(3)]
    optimizers = [cls(m.parameters()) for m in models]
    x, y = make_data()
    for step in range(10):
        xb, yb = batches(step, x, y)
        for way, (model, optimizer) in enumerate(zip(models, optimizers)):
            closure = make_closure(model, optimizer, (xb, yb))
            if way == 0:
                optimizer.step(closure)
            elif way == 1:
                optimizer.step(loss=closure())
            else:
                optimizer.observe_loss(closure())
                optimizer.step()
    assert max_param_diff(models[0], models[1]) == 0.0
    assert max_param_diff(models[0], models[2]) == 0.0


@pytest.mark.parametrize("cls", [MoMo, MoMoAdam])
def test_missing_loss_names_the_three_ways(cls) -> None:
    model = make_model()
    optimizer = cls(model.parameters())
    x, y = make_data()
    make_closure(model, optimizer, batches(0, x, y))()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError) as error:
        optimizer.step()
    message = str(error.value)
    assert "step(closure)" in message and "loss=" in message and "observe_loss" in message
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    # an observed loss is used once: the next bare step needs a new one
    optimizer.observe_loss(1.0)
    optimizer.step()
    with pytest.raises(ValueError, match="observe_loss"):
        optimizer.step()


def test_closure_and_loss_together_is_an_error() -> None:
    model = make_model()
    optimizer = MoMo(model.parameters())
    x, y = make_data()
    closure = make_closure(model, optimizer, batches(0, x, y))
    with pytest.raises(ValueError, match="either"):
        optimizer.step(closure, loss=torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar"):
        optimizer.step(loss=torch.ones(2))


def test_param_groups_must_share_the_loss_model() -> None:
    params = list(make_model().parameters())
    with pytest.raises(ValueError, match="beta"):
        MoMo([{"params": params[:2], "beta": 0.5}, {"params": params[2:]}])


def test_grad_scaler_passes_the_unscaled_loss() -> None:
    """GradScaler.step(opt, loss=...) reaches MoMo; the scaler's own inf check skips bad steps."""
    model = make_model(dtype=torch.float32)
    optimizer = MoMo(model.parameters(), nonfinite="off")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = make_data(dtype=torch.float32)
    taus = []
    with torch.no_grad():
        initial = float(((model(x) - y) ** 2).mean())
    for step in range(40):
        xb, yb = batches(step, x, y)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ((model(xb).float() - yb) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer, loss=loss.detach())
        scaler.update()
        taus.append(float(optimizer.stats["tau"]))
    assert len(set(taus)) > 1, "tau never changed: the loss did not reach MoMo"
    with torch.no_grad():
        final = float(((model(x) - y) ** 2).mean())
    assert final < 0.8 * initial
