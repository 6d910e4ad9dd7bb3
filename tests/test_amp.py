"""Mixed precision: ``torch.autocast`` with ``torch.amp.GradScaler``, and bf16 parameters.

On the CPU the autocast type is bfloat16; with ``pytest --device cuda`` it is float16, where the
GradScaler matters most.

The loss-aware optimizers get the *unscaled* loss through ``scaler.step(optimizer, loss=loss.detach())``;
when the scaler finds an Inf/NaN gradient it skips ``optimizer.step`` entirely, which must leave parameters
and every piece of optimizer state (per-parameter and global) untouched.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from tunefree import available_optimizers, get_optimizer_info

from .optim import helpers


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: intra-op threads only add overhead, and on a loaded 2-core machine the
    OpenMP hand-offs made one CNN step 150x slower (0.4 s instead of 3 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _optimizer_params(*, closure_ok: bool = True) -> list:
    params = []
    for info in available_optimizers(include_baselines=False):
        marks = []
        try:
            info.cls  # noqa: B018 - imports the module
        except (ImportError, AttributeError) as error:
            marks.append(pytest.mark.skip(reason=f"{info.name} does not import yet ({error})"))
        if info.needs_closure and not closure_ok:
            marks.append(pytest.mark.skip(reason="GradScaler does not support closures (torch raises)"))
        params.append(pytest.param(info.name, id=info.name, marks=marks))
    return params


def autocast() -> torch.autocast:
    """bfloat16 autocast on the CPU (its fast low-precision type), float16 on a GPU."""
    device = helpers.DEVICE.type
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


def make_scaler() -> torch.amp.GradScaler:
    return torch.amp.GradScaler(helpers.DEVICE.type)


def make_cnn(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 4),
    ).to(dtype=dtype, device=helpers.DEVICE)


def make_images(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 one-channel images whose class (of 4) is the quadrant with the brightest blob."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    images = 0.3 * torch.randn(n, 1, 8, 8, generator=gen)
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return images.to(helpers.DEVICE), labels.to(helpers.DEVICE)


def batch(step: int, images: torch.Tensor, labels: torch.Tensor, size: int = 16):
    start = (step * size) % images.shape[0]
    return images[start:start + size], labels[start:start + size]


def state_snapshot(optimizer) -> dict:
    """Every tensor of the optimizer: per-parameter state and the global scalars (cloned)."""
    per_param = {
        (i, key): value.clone()
        for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])
        for key, value in optimizer.state.get(p, {}).items() if isinstance(value, torch.Tensor)
    }
    global_state = {key: value.clone() for key, value in getattr(optimizer, "global_state", {}).items()}
    return {"param": per_param, "global": global_state}


def assert_same_state(before: dict, after: dict) -> None:
    for part in ("param", "global"):
        assert before[part].keys() == after[part].keys(), f"{part} state keys changed"
        for key in before[part]:
            a, b = before[part][key], after[part][key]
            assert torch.equal(a, b), f"{part} state {key} changed on a skipped step"
            if a.is_floating_point():
                assert torch.isfinite(b).all(), f"{part} state {key} is not finite"


def amp_step(model, optimizer, scaler, images, labels, poison_grad: bool = False) -> torch.Tensor:
    optimizer.zero_grad()
    with autocast():
        loss = nn.functional.cross_entropy(model(images), labels)
    scaler.scale(loss).backward()
    if poison_grad:
        next(model.parameters()).grad.view(-1)[0] = float("inf")
    scaler.step(optimizer, loss=loss.detach())
    scaler.update()
    return loss.detach()


def test_gradscaler_exists_on_the_device():
    scaler = make_scaler()
    assert scaler.is_enabled()


@pytest.mark.parametrize("name", ["momo", "momo_adam"])
def test_autocast_gradscaler_trains_cnn(name):
    model = make_cnn()
    optimizer = get_optimizer_info(name).create(model.parameters(), lr={"momo": 1.0, "momo_adam": 0.1}[name])
    scaler = make_scaler()
    images, labels = make_images()
    with torch.no_grad():
        initial = nn.functional.cross_entropy(model(images), labels).item()
    taus, losses = [], []
    for step in range(30):
        losses.append(amp_step(model, optimizer, scaler, *batch(step, images, labels)).item())
        taus.append(optimizer.stats["tau"].item())
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(images), labels).item()
    assert math.isfinite(final) and final < 0.7 * initial, f"{name}: full-batch loss {initial:.3f} -> {final:.3f}"
    assert min(taus) < max(taus), f"{name}: tau never changed ({taus[0]})"
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    # the loss the optimizer saw is the unscaled one (the scale is 2**16 at the start)
    assert optimizer.stats["loss_avg"].item() < 10.0


@pytest.mark.parametrize("how", ["inf_grad", "inf_loss"])
@pytest.mark.parametrize("name", _optimizer_params(closure_ok=False))
def test_gradscaler_skipped_step_changes_nothing(name, how):
    model = make_cnn()
    optimizer = get_optimizer_info(name).create(model.parameters())
    scaler = make_scaler()
    images, labels = make_images()
    for step in range(3):
        amp_step(model, optimizer, scaler, *batch(step, images, labels))
    params_before = copy.deepcopy([p.detach() for p in model.parameters()])
    state_before = state_snapshot(optimizer)
    scale_before = scaler.get_scale()

    xb, yb = batch(3, images, labels)
    if how == "inf_grad":
        amp_step(model, optimizer, scaler, xb, yb, poison_grad=True)
    else:
        optimizer.zero_grad()
        with autocast():
            loss = nn.functional.cross_entropy(model(xb), yb)
        scaler.scale(loss * float("inf")).backward()  # the scaled loss overflows: Inf/NaN gradients
        scaler.step(optimizer, loss=loss.detach())
        scaler.update()

    assert scaler.get_scale() < scale_before, "the scaler did not see the Inf gradient (test is vacuous)"
    for a, b in zip(params_before, model.parameters()):
        assert torch.equal(a, b.detach()), f"{name}: a parameter changed on a skipped step"
        assert torch.isfinite(b).all()
    assert_same_state(state_before, state_snapshot(optimizer))
    # training goes on normally afterwards
    amp_step(model, optimizer, scaler, *batch(4, images, labels))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, b.detach()) for a, b in zip(params_before, model.parameters()))


@pytest.mark.parametrize("name", _optimizer_params())
def test_bf16_cnn_trains(name):
    """bf16 parameters (no autocast, no fp32 master copy) with every tunefree optimizer: the loss goes
    down, parameters stay bf16 and finite, floating state is finite."""
    info = get_optimizer_info(name)
    model = make_cnn(dtype=torch.bfloat16)
    lr = {"smes": 3e-2, "agd": 1e-2, "gala_adam": 1e-2, "momo_adam": 0.1}.get(name, info.default_lr)
    optimizer = info.create(model.parameters(), lr=lr)
    images, labels = make_images()
    images = images.to(torch.bfloat16)

    def full_loss() -> float:
        with torch.no_grad():
            return nn.functional.cross_entropy(model(images).float(), labels).item()

    initial = full_loss()
    for step in range(30):
        xb, yb = batch(step, images, labels)

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xb).float(), yb)
            loss.backward()
            return loss

        if info.needs_closure:
            optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step(loss=loss)
    final = full_loss()
    assert math.isfinite(final) and final < 0.9 * initial, f"{name}: loss {initial:.3f} -> {final:.3f}"
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in model.parameters())
    for p in model.parameters():
        for key, value in optimizer.state[p].items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), f"{name}: state {key} is not finite"
