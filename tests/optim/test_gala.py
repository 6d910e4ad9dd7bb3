"""GALA beyond the generic contract: the closure protocol, side effects of the extra pass, NaN in the second
evaluation, and whether the learning rate really adapts (issue 3's acceptance, reported honestly)."""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import pytest
import torch
from torch import nn

from tunefree import GALA

from .helpers import batches, make_closure, make_data, make_model, train


@pytest.fixture
def one_thread():
    """Single-threaded torch: the tiny problems below are faster and timing-stable on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- closure protocol
def test_missing_closure_is_a_clear_error() -> None:
    model = make_model()
    optimizer = GALA(model.parameters())
    loss = ((model(make_data(n=2)[0])) ** 2).mean()
    loss.backward()
    for call in (lambda: optimizer.step(), lambda: optimizer.step(loss=loss)):
        with pytest.raises(ValueError, match="closure") as info:
            call()
        assert "twice" in str(info.value)
    assert not optimizer.state and not optimizer.global_state


def test_closure_calls_one_then_two_per_step() -> None:
    model = make_model()
    optimizer = GALA(model.parameters())
    x, y = make_data()
    counts = []
    for step in range(5):
        inner = make_closure(model, optimizer, batches(step, x, y))
        calls = []

        def closure(inner=inner, calls=calls):
            calls.append(1)
            return inner()

        before = [p.detach().clone() for p in model.parameters()]
        returned = optimizer.step(closure)
        counts.append(len(calls))
        # step() returns the loss of the first call, at the parameters before the step
        for p, q in zip(model.parameters(), before):
            p.data, q.data = q.data, p.data
        assert torch.equal(returned.detach(), inner().detach())
        for p, q in zip(model.parameters(), before):
            p.data, q.data = q.data, p.data
    assert counts == [1, 2, 2, 2, 2]


def test_gradients_after_step_are_those_of_the_current_point() -> None:
    """The extra pass puts back g_t: .grad after step() is the first call's gradient, not ghat."""
    model = make_model()
    optimizer = GALA(model.parameters(), lr=1e-2)
    x, y = make_data()
    train(model, optimizer, 2)
    closure = make_closure(model, optimizer, batches(2, x, y))
    reference = copy.deepcopy(model)
    ref_loss = ((reference(batches(2, x, y)[0]) - batches(2, x, y)[1]) ** 2).mean()
    ref_loss.backward()
    optimizer.step(closure)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)


# ---------------------------------------------------------------------------------------- BN / dropout
def _bn_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.Dropout(0.5), nn.Tanh(), nn.Linear(12, 1)).double()


def _bn_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    xb = torch.randn(16, 5, generator=generator, dtype=torch.float64)
    return xb, xb.sum(dim=1, keepdim=True).sin()


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in model[1].buffers()]


@pytest.mark.parametrize("how", ["constructor", "attach"])
def test_extra_pass_leaves_batchnorm_and_rng_as_one_plain_forward(how: str) -> None:
    model = _bn_dropout_model()
    if how == "constructor":
        optimizer = GALA(model.parameters(), lr=1e-2, model=model)
    else:
        optimizer = GALA(model.parameters(), lr=1e-2).attach(model)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    torch.manual_seed(1)
    for step in range(4):
        xb, yb = _bn_data(step)
        # What one plain forward/backward at the current parameters does to BN buffers and the RNG:
        plain = copy.deepcopy(model)  # the hook is copied too: it records the plain pass's mask
        rng = torch.get_rng_state()
        masks.clear()
        make_closure(plain, torch.optim.SGD(plain.parameters(), lr=0.0), (xb, yb))()
        expected_buffers, expected_rng, plain_mask = _bn_buffers(plain), torch.get_rng_state(), masks[0]
        torch.set_rng_state(rng)
        masks.clear()

        optimizer.step(make_closure(model, optimizer, (xb, yb)))

        assert len(masks) == (1 if step == 0 else 2)
        assert torch.equal(masks[0], plain_mask)
        for got, want in zip(_bn_buffers(model), expected_buffers):
            assert torch.equal(got, want)
        assert int(model[1].num_batches_tracked) == step + 1
        assert torch.equal(torch.get_rng_state(), expected_rng), "the RNG stream must continue as after one pass"
        if step > 0:
            assert torch.equal(masks[0], masks[1]), "both passes must draw the same dropout masks"


def test_without_model_batchnorm_updates_twice_but_masks_still_match() -> None:
    """Documented behaviour without attach(): running stats see both passes; RNG replay still works."""
    model = _bn_dropout_model()
    optimizer = GALA(model.parameters(), lr=1e-2)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    for step in range(3):
        masks.clear()
        optimizer.step(make_closure(model, optimizer, _bn_data(step)))
    assert int(model[1].num_batches_tracked) == 1 + 2 + 2
    assert torch.equal(masks[0], masks[1])


def test_rng_replay_can_be_switched_off() -> None:
    model = _bn_dropout_model()
    optimizer = GALA(model.parameters(), lr=1e-2, model=model, replay_rng=False)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    for step in range(2):
        masks.clear()
        optimizer.step(make_closure(model, optimizer, _bn_data(step)))
    assert not torch.equal(masks[0], masks[1])


def test_attach_rejects_bad_arguments() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="buffers"):
        GALA(model.parameters(), model=model, buffers="some")
    with pytest.raises(ValueError, match="model"):
        GALA(model.parameters()).attach("not a module")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- NaN in the 2nd pass
@pytest.mark.parametrize("nonfinite", ["raise", "skip", "off"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_second_evaluation_drops_only_its_feedback(nonfinite: str, bad: float) -> None:
    model = make_model()
    # lr_min > 0 keeps the parameters moving, so the base step after the dropped feedback is visible
    optimizer = GALA(model.parameters(), lr=1e-2, lr_min=1e-3, nonfinite=nonfinite)
    train(model, optimizer, 3)
    before = {k: v.clone() for k, v in optimizer.global_state.items()}
    x, y = make_data()
    xb, yb = batches(3, x, y)
    calls = []

    def second_call_poisoned() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        if len(calls) == 2:
            next(model.parameters()).grad[0, 0] = bad
        return loss

    params_before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(second_call_poisoned)
    state = optimizer.global_state
    assert torch.equal(state["A"], before["A"]) and torch.equal(state["B"], before["B"])
    assert torch.equal(state["eta"], before["eta"])
    assert float(optimizer.stats["dropped_feedback"]) == 1
    # the base step from the finite g_t still happened, and nothing became non-finite
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(v).all() for v in optimizer.global_state.values())
    train(model, optimizer, 3, start=4)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("last_curvature", [None, 0.0, 0.5])
def test_eta_can_leave_zero(last_curvature) -> None:
    """At eta = 0 the parameters stop and the alignment <g, u_prev> still moves A; dx = 0 measures no
    curvature, so L is the last one measured (0 before any, and in checkpoints written before it was kept)."""
    weights = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    optimizer = GALA([weights], lr=1e-3, momentum=0.0)
    optimizer.global_state.update(
        step=torch.tensor(5.0, dtype=torch.float64), eta=torch.tensor(0.0, dtype=torch.float64),
        A=torch.tensor(-1e-3, dtype=torch.float64), B=torch.tensor(1.0, dtype=torch.float64),
        dropped_feedback=torch.tensor(0.0, dtype=torch.float64),
    )
    if last_curvature is not None:
        optimizer.global_state["last_curvature"] = torch.tensor(last_curvature, dtype=torch.float64)
    curvature = last_curvature or 0.0
    optimizer.state[weights] = {
        "prev_param": weights.detach().clone(),
        "momentum_buffer": torch.tensor([1.0, 2.0], dtype=torch.float64),
    }

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * (weights ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(optimizer.stats["curvature"]) == curvature
    assert float(optimizer.stats["alignment"]) == pytest.approx(5.0)  # <g, u> = ||(1, 2)||^2
    assert float(optimizer.stats["lr"]) == pytest.approx((5.0 - 1e-3) / (1.0 + curvature * 5.0))
    # the step moved, so the next feedback measures its own curvature and keeps it for later
    optimizer.step(closure)
    moved_curvature = float(optimizer.stats["curvature"])
    assert moved_curvature == pytest.approx(1.0)  # the gradient of 0.5 ||w||^2 changes by exactly dx
    assert float(optimizer.global_state["last_curvature"]) == moved_curvature


# ---------------------------------------------------------------------------------------- alignment option
@pytest.mark.parametrize("base, expected", [
    ("sgd", dict(alignment="start", curvature="rayleigh", lr_growth=1.5)),
    ("adam", dict(alignment="direction", curvature="norm", lr_growth=math.inf)),
])
def test_defaults_are_per_base_and_explicit_values_win(base: str, expected: dict) -> None:
    """The documented per-base defaults (docs/optimizers-defaults.md), and an explicit value overrides each."""
    group = GALA(make_model().parameters(), base=base).param_groups[0]
    assert {key: group[key] for key in expected} == expected
    group = GALA(make_model().parameters(), base=base, lr_growth=3.0, curvature="norm").param_groups[0]
    assert (group["lr_growth"], group["curvature"]) == (3.0, "norm")


def test_same_batch_alignment_is_refused_with_adam_and_must_agree_across_groups() -> None:
    with pytest.raises(ValueError, match="alignment"):
        GALA(make_model().parameters(), lr=1e-3, base="adam", alignment="same_batch")
    params = list(make_model().parameters())
    optimizer = GALA(params[:2], alignment="same_batch")
    with pytest.raises(ValueError, match="alignment"):
        optimizer.add_param_group({"params": params[2:], "alignment": "direction"})
    assert len(optimizer.param_groups) == 1


def test_same_batch_alignment_resumes_exactly_and_loads_checkpoints_without_the_key() -> None:
    """No extra state (u_(t-1) is the momentum buffer); a checkpoint saved before the option existed
    (param groups without "alignment") loads and runs as "direction"."""
    for alignment in ("same_batch", "direction"):
        model = make_model()
        optimizer = GALA(model.parameters(), lr=0.1, alignment=alignment)
        train(model, optimizer, 5)
        saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
        assert set(saved["state"][0]) == {"prev_param", "momentum_buffer"}
        train(model, optimizer, 5, start=5)
        resumed_model = make_model(seed=1)
        resumed_model.load_state_dict(saved_model)
        if alignment == "direction":
            for group in saved["param_groups"]:
                del group["alignment"]
        resumed = GALA(resumed_model.parameters(), lr=0.1, alignment=alignment)
        resumed.load_state_dict(saved)
        train(resumed_model, resumed, 5, start=5)
        for p, q in zip(model.parameters(), resumed_model.parameters()):
            assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------- does GALA adapt?
# Issue 3's acceptance: from initial learning rates 1e-5 ... 1, GALA ends with learning rates within 3x of
# each other and a loss within 2x of the best fixed-lr SGD-momentum run of the same length, while plain SGD
# spreads. Measured result (see the report table printed with -s, and the README): NOT met as stated.
# The tests below assert what GALA really does; the literal acceptance is kept as strict xfails, so that a
# change that meets it shows up as XPASS.

STARTS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
SGD_GRID = [10 ** (k / 4) for k in range(-20, 5)]  # 1e-5 ... 10, 4 per decade
STEPS = 300


def _quadratic():
    """f(x) = 0.5 sum_i lam_i x_i^2, lam log-spaced in [1e-3, 1] (condition number 1000), full batch."""
    lam = torch.logspace(-3, 0, 50, dtype=torch.float64)

    def make():
        x = nn.Parameter(torch.ones(50, dtype=torch.float64))
        loss_at = lambda step: 0.5 * (lam * x * x).sum()  # noqa: E731
        return [x], loss_at, lambda: float(loss_at(0).detach())

    return make


def _mlp():
    """Teacher-student regression, 256 samples, an 8-32-1 tanh MLP, mini-batches of 32 cycled in order."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=generator, dtype=torch.float64)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        y = teacher(x) + 0.05 * torch.randn(256, 1, generator=generator, dtype=torch.float64)

    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).double()

        def loss_at(step):
            i = (step * 32) % 256
            return ((model(x[i:i + 32]) - y[i:i + 32]) ** 2).mean()

        def full_loss():
            with torch.no_grad():
                return float(((model(x) - y) ** 2).mean())

        return list(model.parameters()), loss_at, full_loss

    return make


PROBLEMS = {"quadratic": _quadratic, "mlp": _mlp}


def _run(problem: str, factory) -> tuple[float, float]:
    """(final full loss, final learning rate); a diverged run has loss inf."""
    params, loss_at, full_loss = PROBLEMS[problem]()()
    optimizer = factory(params)
    try:
        for step in range(STEPS):
            def closure(step=step):
                optimizer.zero_grad()
                loss = loss_at(step)
                loss.backward()
                return loss
            optimizer.step(closure)
    except Exception:  # NonFiniteError from GALA: a diverged run, as for SGD below
        return math.inf, math.nan
    final = full_loss()
    lr = float(optimizer.stats["lr"]) if isinstance(optimizer, GALA) else optimizer.param_groups[0]["lr"]
    return (final if math.isfinite(final) else math.inf), lr


@lru_cache(maxsize=None)
def _sgd_results(problem: str, momentum: float = 0.9) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {lr: _run(problem, lambda p, lr=lr: torch.optim.SGD(p, lr=lr, momentum=momentum))[0]
                for lr in sorted(set(SGD_GRID) | set(STARTS))}
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=None)
def _results(problem: str, base: str, alignment: str = "direction", momentum: float = 0.9,
             curvature: str = "norm", lr_growth: float = math.inf) -> dict:
    """GALA from every start vs fixed-lr SGD with the same momentum (GALA's base without the adaptation)."""
    sgd = _sgd_results(problem, momentum)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gala = {lr0: _run(problem, lambda p, lr0=lr0: GALA(p, lr=lr0, base=base, alignment=alignment,
                                                            momentum=momentum, curvature=curvature,
                                                            lr_growth=lr_growth))
                for lr0 in STARTS}
    finally:
        torch.set_num_threads(before)
    best_lr = min(sgd, key=sgd.get)
    lines = [f"[{problem}, GALA base={base} alignment={alignment} curvature={curvature} lr_growth={lr_growth} "
             f"momentum={momentum}] "
             f"best fixed-lr SGD "
             f"(momentum {momentum}) over the grid: lr={best_lr:.3g} loss={sgd[best_lr]:.3g}"]
    for lr0 in STARTS:
        loss, lr = gala[lr0]
        lines.append(f"  start {lr0:g}: GALA final lr={lr:.3g} loss={loss:.3g} | SGD-M lr={lr0:g} loss={sgd[lr0]:.3g}")
    print("\n".join(lines))
    return {"gala": gala, "sgd": sgd, "best": sgd[best_lr], "best_lr": best_lr}


def _spread(values) -> float:
    values = list(values)
    return max(values) / min(values) if min(values) > 0 else math.inf


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_plain_sgd_spreads_over_the_starts(problem: str) -> None:
    sgd = _results(problem, "sgd")["sgd"]
    assert _spread(sgd[lr] for lr in STARTS) > 100


ACCEPTANCE_NOTE = (
    "issue 3 acceptance not met by GALA's closure form as implemented; measured numbers in docs/gala-measurements.md"
)


# Every configuration GALA offers, each against fixed-lr SGD with the same momentum: "the best fixed-learning-
# rate SGD run" read as SGD-momentum (GALA's default base, momentum 0.9) and as plain SGD (momentum 0).
@pytest.mark.parametrize("problem,base,alignment,momentum", [
    pytest.param(problem, base, alignment, momentum, marks=pytest.mark.xfail(strict=True, reason=ACCEPTANCE_NOTE))
    for problem in PROBLEMS
    for base, alignment, momentum in [("sgd", "direction", 0.9), ("sgd", "same_batch", 0.9), ("adam", "direction", 0.9),
                                      ("sgd", "direction", 0.0), ("sgd", "same_batch", 0.0)]
])
def test_acceptance_as_stated(problem: str, base: str, alignment: str, momentum: float) -> None:
    result = _results(problem, base, alignment, momentum)
    lrs = [result["gala"][lr0][1] for lr0 in STARTS]
    losses = [result["gala"][lr0][0] for lr0 in STARTS]
    assert _spread(lrs) <= 3
    assert max(losses) <= 2 * result["best"]


def test_quadratic_sgd_momentum_base_adapts_but_conservatively() -> None:
    """Same learning rate from every start (within 3x), but about (1 - momentum) / (2 L): far below the best
    fixed heavy-ball rate, so the loss stays orders of magnitude above tuned SGD-momentum."""
    result = _results("quadratic", "sgd")
    lrs = [result["gala"][lr0][1] for lr0 in STARTS]
    losses = [result["gala"][lr0][0] for lr0 in STARTS]
    assert _spread(lrs) <= 3
    assert 0.02 < min(lrs) and max(lrs) < 0.3
    assert _spread(losses) <= 3  # independent of the start ...
    assert min(losses) > 1e6 * result["best"]  # ... but not competitive with tuned SGD-momentum
    for lr0 in STARTS[:4]:  # better than untuned SGD-momentum at small starts
        assert result["gala"][lr0][0] < result["sgd"][lr0]


def test_quadratic_adam_base_reaches_the_tuned_loss_scale() -> None:
    result = _results("quadratic", "adam")
    for lr0 in STARTS:
        assert result["gala"][lr0][0] < 10 * result["best"]


def test_mlp_sgd_momentum_base_collapses_to_zero_learning_rate() -> None:
    """Known failure: with mini-batches cycled in order, <g_t, u_{t-1}> pairs gradients of different batches
    of one epoch, whose noise is anti-correlated; A turns negative and eta sticks at lr_min = 0."""
    result = _results("mlp", "sgd")
    for lr0 in STARTS[:5]:
        assert result["gala"][lr0][1] == 0.0
        assert result["gala"][lr0][0] > 10 * result["best"]


def test_mlp_adam_base_adapts_from_small_starts() -> None:
    result = _results("mlp", "adam")
    small = STARTS[:5]  # lr0 = 1: the un-adapted first Adam step already ruins the run
    assert _spread(result["gala"][lr0][1] for lr0 in small) <= 3
    for lr0 in small:
        assert result["gala"][lr0][0] < 4 * result["best"]
        assert result["gala"][lr0][0] < result["sgd"][lr0] or lr0 == 1e-2


def test_mlp_same_batch_alignment_meets_the_acceptance_for_starts_up_to_0_1() -> None:
    """alignment="same_batch" (a_t = <g_t, ghat_t>, both on batch xi_t) removes the cross-batch pairing that
    makes the default collapse: from every start <= 0.1 it settles near the best fixed SGD-M rate, with a
    loss within 2x of tuned SGD-momentum. lr0 = 1: the un-adapted first step blows the loss up (SGD-M at lr 1
    diverges); GALA recovers (the last curvature is reused after its eta = 0 step) but the blow-up stays in A and
    B, and it ends at a 10x lower rate with a loss far above the tuned one."""
    result = _results("mlp", "sgd", "same_batch")
    small = STARTS[:5]
    lrs = [result["gala"][lr0][1] for lr0 in small]
    assert _spread(lrs) <= 3
    assert all(result["best_lr"] / 3 < lr < 3 * result["best_lr"] for lr in lrs)
    for lr0 in small:
        assert result["gala"][lr0][0] <= 2 * result["best"]
        assert result["gala"][lr0][0] < result["sgd"][lr0]
    assert result["sgd"][1.0] == math.inf
    loss, lr = result["gala"][1.0]
    assert math.isfinite(loss) and loss > 10 * result["best"]
    assert lr < min(lrs) / 3


def test_quadratic_same_batch_alignment_is_consistent_and_less_conservative() -> None:
    """Same learning rate from every start, about 4x the default's and a 10x lower loss, but still far from
    tuned heavy-ball (the one-step surrogate cannot see what momentum gains on an ill-conditioned problem)."""
    result = _results("quadratic", "sgd", "same_batch")
    default = _results("quadratic", "sgd")
    lrs = [result["gala"][lr0][1] for lr0 in STARTS]
    assert _spread(lrs) <= 3
    assert 0.1 < min(lrs) and max(lrs) < 0.4
    for lr0 in STARTS:
        assert result["gala"][lr0][0] < default["gala"][lr0][0]
    assert min(result["gala"][lr0][0] for lr0 in STARTS) > 1e6 * result["best"]


# ------------------------------------------------------- alignment at the start of the step, secant curvature
# alignment="start" + curvature="rayleigh" (tunefree's variant of the surrogate, docs/optimizers-defaults.md):
# a_t = <ghat_t, u_(t-1)> at x_(t-1) and b_t = <g_t - ghat_t, dx> / ||dx||^2 * ||u||^2, so that A / B is the
# exact line search of the quadratic model along u (the paper form measures a at x_t, which already contains
# the step's own curvature term once, and uses ||H u|| / ||u|| >= the Rayleigh quotient).
def test_start_rayleigh_plain_sgd_meets_the_acceptance_on_the_quadratic() -> None:
    result = _results("quadratic", "sgd", "start", 0.0, "rayleigh", 1.5)
    lrs = [result["gala"][lr0][1] for lr0 in STARTS]
    assert _spread(lrs) <= 3
    assert all(result["best_lr"] / 3 < lr < 3 * result["best_lr"] for lr in lrs)
    assert max(result["gala"][lr0][0] for lr0 in STARTS) <= 2 * result["best"]


def test_start_rayleigh_momentum_base_is_far_less_conservative_on_the_quadratic() -> None:
    """Within 3.5x from every start (lr 0.16-0.52 at the default growth 1.5: 3.2x; growth 2 gave 0.18-0.52, 2.9x,
    the slower climb costs the small starts), 3-5x the paper form's, and a loss 4.7-54x lower, still short of the
    heavy-ball optimum (lr 3.2, loss 1e-13): a one-step surrogate cannot see what momentum gains later."""
    result = _results("quadratic", "sgd", "start", 0.9, "rayleigh", 1.5)
    paper_form = _results("quadratic", "sgd")
    lrs = [result["gala"][lr0][1] for lr0 in STARTS]
    assert _spread(lrs) <= 3.5
    for lr0 in STARTS:
        assert result["gala"][lr0][0] < 0.25 * paper_form["gala"][lr0][0]
    assert min(result["gala"][lr0][0] for lr0 in STARTS) > 1e3 * result["best"]


def test_start_rayleigh_adam_base_nears_tuned_heavy_ball_on_the_quadratic() -> None:
    """Within 3x from every start; loss within 30x of tuned heavy-ball's 1e-13 (the growth bound spends the
    first steps of the small starts climbing)."""
    result = _results("quadratic", "adam", "start", 0.9, "rayleigh", 2.0)
    assert _spread(result["gala"][lr0][1] for lr0 in STARTS) <= 3
    for lr0 in STARTS:
        assert result["gala"][lr0][0] < 30 * result["best"]


def test_start_rayleigh_momentum_base_settles_at_the_best_fixed_rate_on_the_mlp() -> None:
    """Starts <= 0.1: final lr within 3x of the best fixed SGD-M rate (the paper form collapses to 0 here),
    loss within 4x of tuned SGD-M (not the 2x of the stated acceptance). Start 1 (known failure): the
    un-adapted first step blows the loss up and the run does not recover (lr 0.0024, loss about 2000x)."""
    result = _results("mlp", "sgd", "start", 0.9, "rayleigh", 1.5)
    small = STARTS[:5]
    lrs = [result["gala"][lr0][1] for lr0 in small]
    assert _spread(lrs) <= 3
    assert all(result["best_lr"] / 3 < lr < 3 * result["best_lr"] for lr in lrs)
    for lr0 in small:
        assert result["gala"][lr0][0] <= 4 * result["best"]
    assert result["gala"][1.0][0] > 100 * result["best"]
