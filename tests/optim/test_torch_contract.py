"""torch's generic optimizer contract, checked for every row of the case table.

PyTorch tests its own optimizers against one contract (``test/test_optim.py``, driven by the ``OptimizerInfo``
table of ``torch/testing/_internal/common_optimizers.py``). These are the checks of that contract that apply
to tunefree, written here for tunefree's optimizers and their loss or closure: copies and pickles continue
exactly, hooks see the whole state, steps without gradients change nothing, per-group options are honoured
or refused, complex parameters behave as their ``view_as_real``, schedulers that cycle momentum and the SWA
utilities work, and bad hyperparameters or a bad state are refused with the optimizer left as it was.
"""

from __future__ import annotations

import copy
import math
import pickle
import threading

import pytest
import torch
from torch import nn

from . import helpers
from .cases import CASES, Case
from .helpers import batches, clone_model, make_closure, make_data, make_model, max_param_diff, train
from .test_contract import assert_same_state, state_snapshot

GLOBAL_KEY = "tunefree_global_state"
#: hyperparameters that may be infinite (documented meanings): MoMo's uncapped step, GALA's unclipped rate
INFINITE_OK = {"momo": {"lr"}, "momo_adam": {"lr"}, "gala": {"lr_max"}, "gala_adam": {"lr_max"}}


def device() -> torch.device:
    return helpers.DEVICE


def build(case: Case, model: nn.Module | None = None, **overrides):
    model = model if model is not None else make_model()
    return model, case.cls(model.parameters(), **{**case.train_kwargs, **overrides})


def same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def assert_loaded_run_continues_exactly(case: Case, model: nn.Module, optimizer, saved: dict, start: int = 3):
    """Load ``saved`` into a fresh optimizer on a copy of ``model``; both continue 3 steps and must agree."""
    model_b = clone_model(model)
    loaded = case.cls(model_b.parameters(), **case.train_kwargs)
    loaded.load_state_dict(saved)
    train(model, optimizer, 3, start=start)
    train(model_b, loaded, 3, start=start)
    assert same_params(model, model_b)
    return loaded


def no_grad_closure(model: nn.Module, optimizer, step: int = 0):
    """A closure that returns the loss but computes no gradient (every ``.grad`` is None)."""
    x, y = make_data()
    xb, yb = batches(step, x, y)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.no_grad():
            return ((model(xb) - yb) ** 2).mean()

    return closure


# ---------------------------------------------------------------------------------------------- copies
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_copy_mid_run_continues_exactly(case: Case, how: str) -> None:
    model, optimizer = build(case, nonfinite="skip")
    train(model, optimizer, 4)
    if how == "deepcopy":
        model_copy, copied = copy.deepcopy((model, optimizer))
    else:
        model_copy, copied = pickle.loads(pickle.dumps((model, optimizer)))
    assert copied.nonfinite == "skip"
    public = {k for k in vars(optimizer) if not k.startswith("_")}
    assert public <= set(vars(copied)), "a public attribute was lost"
    assert repr(copied) == repr(optimizer)
    assert copied.global_state.keys() == optimizer.global_state.keys()
    assert all(torch.equal(copied.global_state[k], v) for k, v in optimizer.global_state.items())
    assert copied.stats.keys() == optimizer.stats.keys()
    train(model, optimizer, 5, start=4)
    train(model_copy, copied, 5, start=4)
    assert same_params(model, model_copy)
    assert_same_state(state_snapshot(copied), state_snapshot(optimizer))


@pytest.mark.parametrize("case", [c for c in CASES if c.needs_loss], ids=str)
def test_copy_keeps_an_observed_loss(case: Case) -> None:
    model, optimizer = build(case)
    train(model, optimizer, 2)
    x, y = make_data()
    xb, yb = batches(2, x, y)
    optimizer.zero_grad()
    loss = ((model(xb) - yb) ** 2).mean()
    loss.backward()
    optimizer.observe_loss(loss)
    model_copy, copied = copy.deepcopy((model, optimizer))
    for p, q in zip(model.parameters(), model_copy.parameters()):
        q.grad = p.grad.clone()  # (deepcopy does not copy .grad)
    copied.step()  # the bare step of a trainer finds the loss observed before the copy
    optimizer.step()
    assert same_params(model, model_copy)


def test_process_group_is_shared_by_deepcopy_and_dropped_by_pickle_with_a_warning() -> None:
    group = threading.Lock()  # stands in for a ProcessGroup: neither can be copied or pickled
    optimizer = CASES[0].cls(make_model().parameters(), process_group=group)
    assert copy.deepcopy(optimizer).process_group is group
    with pytest.warns(UserWarning, match="process group cannot be pickled"):
        restored = pickle.loads(pickle.dumps(optimizer))
    assert restored.process_group == "auto"
    assert optimizer.process_group is group


# ---------------------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("case", CASES, ids=str)
def test_state_dict_is_deterministic_and_detached(case: Case) -> None:
    model, optimizer = build(case)
    train(model, optimizer, 3)
    first, second = optimizer.state_dict(), optimizer.state_dict()
    assert_same_state(first, second)
    for value in first[GLOBAL_KEY].values():
        value.add_(1.0)  # a returned state_dict never aliases the optimizer's global scalars
    assert_same_state(optimizer.state_dict(), second)

    loaded = assert_loaded_run_continues_exactly(case, model, optimizer, copy.deepcopy(second))
    assert_same_state(state_snapshot(optimizer), state_snapshot(loaded))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hooks_run_in_order_and_see_the_whole_state(case: Case) -> None:
    model, optimizer = build(case)
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("step_pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("step_post"))
    train(model, optimizer, 2)
    assert calls == ["step_pre", "step_post"] * 2

    calls.clear()
    seen: dict[str, dict] = {}
    optimizer.register_state_dict_pre_hook(lambda opt: calls.append("sd_pre_2"))
    optimizer.register_state_dict_pre_hook(lambda opt: calls.append("sd_pre_1"), prepend=True)

    def state_dict_post(opt, state_dict):
        calls.append("sd_post")
        seen["saved"] = dict(state_dict[GLOBAL_KEY])  # the global scalars are part of what the hook sees
        state_dict["saved_by_hook"] = True

    optimizer.register_state_dict_post_hook(state_dict_post)
    saved = optimizer.state_dict()
    assert calls == ["sd_pre_1", "sd_pre_2", "sd_post"] and saved["saved_by_hook"] is True
    assert seen["saved"].keys() == optimizer.global_state.keys()

    calls.clear()
    model_b = clone_model(model)
    loaded = case.cls(model_b.parameters(), **case.train_kwargs)

    def load_pre(opt, state_dict):
        calls.append("load_pre")
        state_dict = dict(state_dict)
        state_dict["param_groups"] = [dict(g, lr=g["lr"] * 0.5) for g in state_dict["param_groups"]]
        return state_dict

    def load_post(opt):
        calls.append("load_post")
        seen["loaded"] = {k: v.clone() for k, v in opt.global_state.items()}
        opt.state["ran_load_post_hook"] = True  # a non-dict entry stored by a hook, as torch's tests do

    loaded.register_load_state_dict_post_hook(load_post)
    loaded.register_load_state_dict_post_hook(lambda opt: calls.append("load_post_first"), prepend=True)
    loaded.register_load_state_dict_pre_hook(load_pre)
    loaded.load_state_dict(saved)
    assert calls == ["load_pre", "load_post_first", "load_post"]
    assert loaded.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] * 0.5
    # the post hook ran after tunefree restored its global scalars
    assert seen["loaded"].keys() == optimizer.global_state.keys()
    assert all(torch.equal(seen["loaded"][k], v) for k, v in optimizer.global_state.items())
    train(model_b, loaded, 2, start=2)  # the hook's entry does not disturb stepping, saving or loading
    resaved = loaded.state_dict()
    case.cls(clone_model(model_b).parameters(), **case.train_kwargs).load_state_dict(resaved)


# ---------------------------------------------------------------------------------------------- no-op steps
@pytest.mark.parametrize("case", CASES, ids=str)
def test_step_without_any_gradient_changes_nothing(case: Case) -> None:
    model, optimizer = build(case)
    reference_model, reference = build(case)
    train(model, optimizer, 3)
    train(reference_model, reference, 3)
    params_before = [p.detach().clone() for p in model.parameters()]
    state_before = state_snapshot(optimizer)
    stats_before = {k: v.clone() for k, v in optimizer.stats.items()}
    optimizer.step(no_grad_closure(model, optimizer, 3))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
    assert_same_state(state_snapshot(optimizer), state_before)
    assert optimizer.stats.keys() == stats_before.keys()
    assert all(torch.equal(optimizer.stats[k], v) for k, v in stats_before.items())
    # and the run continues as if the step had not been called (GALA's previous point included)
    train(model, optimizer, 3, start=3)
    train(reference_model, reference, 3, start=3)
    assert same_params(model, reference_model)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_zero_gradients_leave_fresh_parameters_unchanged(case: Case) -> None:
    model, optimizer = build(case)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_data()
    xb, yb = batches(0, x, y)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        for p in model.parameters():
            p.grad.zero_()
        return loss

    optimizer.step(closure)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


# ---------------------------------------------------------------------------------------------- param groups
@pytest.mark.parametrize("case", CASES, ids=str)
def test_options_in_a_param_group_are_honoured_or_refused(case: Case) -> None:
    """``cls([{"params": p, **options}])`` equals ``cls(p, **options)``, or raises ValueError: never ignored."""
    honoured = 0
    for options in case.options:
        model_a, model_b = make_model(), make_model()
        try:
            grouped = case.cls([{"params": list(model_a.parameters()), **options}])
        except ValueError:
            continue
        plain = case.cls(model_b.parameters(), **options)
        train(model_a, grouped, 3)
        train(model_b, plain, 3)
        assert same_params(model_a, model_b), f"{options} in a param group was not honoured"
        honoured += 1
    assert honoured > 0 or case.name == "gala_adam"  # GALA's base is global: refused in a group


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("smes", "agd", "rsgdm")], ids=str)
def test_elementwise_groups_with_different_options_equal_separate_optimizers(case: Case) -> None:
    for options in case.options[::3]:
        model_a, model_b = make_model(), make_model()
        pa, pb = list(model_a.parameters()), list(model_b.parameters())
        together = case.cls([{"params": pa[:2]}, {"params": pa[2:], **options}], **case.train_kwargs)
        first = case.cls(pb[:2], **case.train_kwargs)
        second = case.cls(pb[2:], **{**case.train_kwargs, **options})
        x, y = make_data()
        for step in range(3):
            together.step(make_closure(model_a, together, batches(step, x, y)))
            first.step(make_closure(model_b, model_b, batches(step, x, y)))  # computes every gradient
            second.step()
        assert same_params(model_a, model_b), options


@pytest.mark.parametrize("case", CASES, ids=str)
def test_add_param_group_mid_run(case: Case) -> None:
    model = make_model()
    params = list(model.parameters())
    optimizer = case.cls(params[:2], **case.train_kwargs)
    train(model, optimizer, 2)
    later = [p.detach().clone() for p in params[2:]]
    optimizer.add_param_group({"params": params[2:]})
    train(model, optimizer, 3, start=2)
    assert all(not torch.equal(p, q) for p, q in zip(params[2:], later))
    assert all(optimizer.state[p] for p in params)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optimizer.add_param_group({"params": params[:1]})
    resumed = case.cls(params[:2], **case.train_kwargs)
    resumed.add_param_group({"params": params[2:]})
    resumed.load_state_dict(optimizer.state_dict())
    assert_same_state(state_snapshot(resumed), state_snapshot(optimizer))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_empty_param_groups_anywhere(case: Case) -> None:
    kwargs = case.train_kwargs
    model_a, model_b, model_c, model_d = (make_model() for _ in range(4))
    empty_first = case.cls([{"params": []}, {"params": list(model_a.parameters())}], **kwargs)
    plain = case.cls(model_b.parameters(), **kwargs)
    pc, pd = list(model_c.parameters()), list(model_d.parameters())
    empty_middle = case.cls([{"params": pc[:2]}, {"params": []}, {"params": pc[2:]}], **kwargs)
    two_groups = case.cls([{"params": pd[:2]}, {"params": pd[2:]}], **kwargs)
    for model, optimizer in ((model_a, empty_first), (model_b, plain), (model_c, empty_middle), (model_d, two_groups)):
        train(model, optimizer, 4)
    assert same_params(model_a, model_b) and same_params(model_c, model_d)
    resumed = case.cls([{"params": []}, {"params": list(clone_model(model_a).parameters())}], **kwargs)
    resumed.load_state_dict(empty_first.state_dict())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tensor_lr_equals_float_lr(case: Case) -> None:
    lr = case.train_kwargs.get("lr", 1e-3)
    model_a, tensor_lr = build(case, lr=torch.tensor(lr, dtype=torch.float64))
    model_b, float_lr = build(case, lr=lr)
    train(model_a, tensor_lr, 4)
    train(model_b, float_lr, 4)
    assert same_params(model_a, model_b)
    assert tensor_lr.param_groups[0]["lr"] == lr


# ---------------------------------------------------------------------------------------------- tensor kinds
def _complex_problem(seed: int = 0):
    """Two complex parameters, one real one, and batches of a real-valued loss of them."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, dtype=torch.complex128, generator=generator) * 0.5
    b = torch.randn(3, dtype=torch.complex128, generator=generator) * 0.5
    r = torch.randn(3, dtype=torch.float64, generator=generator)
    x = torch.randn(64, 4, dtype=torch.complex128, generator=generator)
    y = torch.randn(64, 3, dtype=torch.complex128, generator=generator)
    return [t.to(device()) for t in (w, b, r, x, y)]


def _complex_loss(w, b, r, xb, yb):
    z = xb @ w + b - yb
    return ((z.real ** 2 + z.imag ** 2) * torch.sigmoid(r)).mean()


def _run_complex(case: Case, as_real: bool, steps: int = 8, **kwargs):
    w, b, r, x, y = _complex_problem()
    if as_real:
        params = [torch.view_as_real(w).clone().requires_grad_(), torch.view_as_real(b).clone().requires_grad_(),
                  r.clone().requires_grad_()]
    else:
        params = [w.clone().requires_grad_(), b.clone().requires_grad_(), r.clone().requires_grad_()]
    optimizer = case.cls(params, **{**case.train_kwargs, **kwargs})
    for step in range(steps):
        xb, yb = batches(step, x, y)

        def closure():
            optimizer.zero_grad()
            w_, b_, r_ = params
            if as_real:
                w_, b_ = torch.view_as_complex(w_), torch.view_as_complex(b_)
            loss = _complex_loss(w_, b_, r_, xb, yb)
            loss.backward()
            return loss

        optimizer.step(closure)
    return [torch.view_as_real(p.detach()) if p.is_complex() else p.detach() for p in params], optimizer


@pytest.mark.parametrize("case", CASES, ids=str)
def test_complex_parameters_behave_as_their_real_view(case: Case) -> None:
    complex_run, optimizer = _run_complex(case, as_real=False)
    real_run, _ = _run_complex(case, as_real=True)
    for p, q in zip(complex_run, real_run):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert all(torch.isfinite(v).all() for v in optimizer.stats.values())


def test_smes_at_one_half_is_adam_on_complex_parameters() -> None:
    smes = next(c for c in CASES if c.name == "smes")
    ours, _ = _run_complex(smes, as_real=False, steps=20, lr=1e-2, alpha=0.5)
    w, b, r, x, y = _complex_problem()
    params = [w.clone().requires_grad_(), b.clone().requires_grad_(), r.clone().requires_grad_()]
    adam = torch.optim.Adam(params, lr=1e-2, foreach=False)
    for step in range(20):
        xb, yb = batches(step, x, y)
        adam.zero_grad()
        _complex_loss(*params, xb, yb).backward()
        adam.step()
    for p, q in zip(ours, params):
        torch.testing.assert_close(p, torch.view_as_real(q.detach()) if q.is_complex() else q.detach(),
                                   rtol=0, atol=1e-12)


def _strided_problem(contiguous: bool):
    generator = torch.Generator().manual_seed(5)
    values = [torch.randn(6, 8, generator=generator, dtype=torch.float64) * 0.5,
              torch.randn(8, generator=generator, dtype=torch.float64) * 0.5,
              torch.randn(8, 2, generator=generator, dtype=torch.float64) * 0.5]
    params = []
    for value in values:
        if contiguous:
            param = value.clone()
        else:  # same values, transposed / strided storage
            # column-major matrices, every other element of a vector
            strides = (1, value.shape[0]) if value.dim() == 2 else (2,)
            param = torch.empty_strided(value.shape, strides, dtype=value.dtype, device=device())
            param.copy_(value)
            assert not param.is_contiguous()
        params.append(param.to(device()).requires_grad_())  # (.to keeps a tensor already there as it is)
    return params


@pytest.mark.parametrize("case", CASES, ids=str)
def test_noncontiguous_parameters_equal_contiguous_ones(case: Case) -> None:
    x, y = make_data()
    results = []
    for contiguous in (True, False):
        params = _strided_problem(contiguous)
        optimizer = case.cls(params, **case.train_kwargs)
        for step in range(5):
            xb, yb = batches(step, x, y)

            def closure():
                optimizer.zero_grad()
                w1, b1, w2 = params
                loss = (((torch.tanh(xb @ w1 + b1) @ w2).sum(1, keepdim=True) - yb) ** 2).mean()
                loss.backward()
                return loss

            optimizer.step(closure)
        results.append([p.detach().contiguous() for p in params])
    for p, q in zip(*results):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_mixed_dtypes_in_one_optimizer(case: Case) -> None:
    """A float32 tensor beside float64 ones: dtypes are kept and the run stays close to the all-float64 one."""
    x, y = make_data()
    runs = []
    for first_dtype in (torch.float32, torch.float64):
        model = make_model()
        model[0].to(first_dtype)
        optimizer = case.cls(model.parameters(), **case.train_kwargs)
        for step in range(5):
            xb, yb = batches(step, x, y)

            def closure():
                optimizer.zero_grad()
                hidden = model[0](xb.to(first_dtype)).to(torch.float64)
                loss = ((model[4](model[3](model[2](model[1](hidden)))) - yb) ** 2).mean()
                loss.backward()
                return loss

            optimizer.step(closure)
        for p in model.parameters():
            for key, value in optimizer.state[p].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    assert value.dtype == p.dtype, key
        runs.append(model)
    assert model_dtype(runs[0][0]) == torch.float32
    assert max_param_diff(runs[0], runs[1]) < 1e-3


def model_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@pytest.fixture
def restore_default_dtype():
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_set_default_dtype_does_not_change_a_float32_run(case: Case, restore_default_dtype) -> None:
    runs = []
    for default in (torch.float32, torch.float64):
        torch.set_default_dtype(torch.float32)  # the same model and data (randn depends on the default)
        model, data = make_model(dtype=torch.float32), make_data(dtype=torch.float32)
        torch.set_default_dtype(default)
        optimizer = case.cls(model.parameters(), **case.train_kwargs)
        train(model, optimizer, 4, data=data)
        runs.append(model)
    torch.set_default_dtype(torch.float32)
    assert same_params(*runs)
    assert model_dtype(runs[1]) == torch.float32


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sparse_gradients_give_one_clear_error_under_every_nonfinite_policy(case: Case) -> None:
    for policy in ("raise", "skip", "off"):
        embedding = nn.Embedding(10, 3, sparse=True).to(device=device(), dtype=torch.float64)
        before = embedding.weight.detach().clone()
        optimizer = case.cls(embedding.parameters(), nonfinite=policy, **case.train_kwargs)
        index = torch.tensor([1, 4, 4], device=device())

        def closure():
            optimizer.zero_grad()
            loss = embedding(index).pow(2).sum()
            loss.backward()
            return loss

        with pytest.raises(RuntimeError, match="does not support sparse gradients.*SparseAdam"):
            optimizer.step(closure)
        assert torch.equal(embedding.weight, before)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_loaded_python_number_steps_continue_exactly(case: Case) -> None:
    model, optimizer = build(case)
    train(model, optimizer, 3)
    saved = copy.deepcopy(optimizer.state_dict())
    for entry in saved["state"].values():
        if "step" in entry:
            entry["step"] = float(entry["step"])
    if "step" in saved[GLOBAL_KEY]:
        saved[GLOBAL_KEY]["step"] = float(saved[GLOBAL_KEY]["step"])
    assert_loaded_run_continues_exactly(case, model, optimizer, saved)


# ---------------------------------------------------------------------------------------------- schedulers, SWA
@pytest.mark.parametrize("kind", ["one_cycle", "cyclic"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_momentum_cycling_schedulers_cycle_what_the_optimizer_uses(case: Case, kind: str) -> None:
    def run(cycle_momentum: bool) -> nn.Module:
        model, optimizer = build(case)
        lr = optimizer.param_groups[0]["lr"]
        momentum = dict(cycle_momentum=cycle_momentum, base_momentum=0.5, max_momentum=0.9)
        if kind == "one_cycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=12, **momentum)
        else:
            scheduler = torch.optim.lr_scheduler.CyclicLR(
                optimizer, base_lr=lr * 0.5, max_lr=lr, step_size_up=3, **momentum)
        x, y = make_data()
        for step in range(10):
            optimizer.step(make_closure(model, optimizer, batches(step, x, y)))
            scheduler.step()
        return model

    # the cycled factor is one the optimizer reads: cycling it changes the trajectory
    assert max_param_diff(run(True), run(False)) > 1e-9


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("momo", "rsgdm")], ids=str)
def test_old_momentum_key_name_still_works(case: Case) -> None:
    model, optimizer = build(case)
    train(model, optimizer, 3)
    saved = copy.deepcopy(optimizer.state_dict())
    for group in saved["param_groups"]:
        group["beta"] = group.pop("momentum")  # a checkpoint written before the key was renamed
    assert_loaded_run_continues_exactly(case, model, optimizer, saved)

    model_c, model_d = make_model(), make_model()
    in_group = case.cls([{"params": list(model_c.parameters()), "beta": 0.8}], **case.train_kwargs)
    in_kwargs = case.cls(model_d.parameters(), **{**case.train_kwargs, "beta": 0.8})
    train(model_c, in_group, 3)
    train(model_d, in_kwargs, 3)
    assert same_params(model_c, model_d)
    with pytest.raises(ValueError, match="both 'beta' and 'momentum'"):
        case.cls([{"params": list(make_model().parameters()), "beta": 0.8, "momentum": 0.8}])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_swa_utilities(case: Case) -> None:
    from torch.optim.swa_utils import SWALR, AveragedModel

    model, optimizer = build(case)
    swa_lr = optimizer.param_groups[0]["lr"] * 0.5
    averaged = AveragedModel(model)
    scheduler = SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=2)
    x, y = make_data()
    snapshots = []
    for step in range(5):
        optimizer.step(make_closure(model, optimizer, batches(step, x, y)))
        scheduler.step()
        averaged.update_parameters(model)
        snapshots.append([p.detach().clone() for p in model.parameters()])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(swa_lr)
    for i, p in enumerate(averaged.module.parameters()):
        torch.testing.assert_close(p.detach(), torch.stack([s[i] for s in snapshots]).mean(0), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- validation
def _bad_values(key: str, value, case: Case):
    """(bad value, why) for a numeric default ``value`` of hyperparameter ``key``."""
    if isinstance(value, tuple):
        yield (math.nan, *value[1:]), "NaN"
        yield str(value), "a string"
        return
    yield math.nan, "NaN"
    yield str(value), "a string"
    yield True, "a bool"
    if key not in INFINITE_OK.get(case.name, set()):
        yield math.inf, "infinite"


def _numeric_defaults(case: Case) -> dict:
    defaults = case.cls(make_model().parameters(), **case.train_kwargs).defaults
    return {k: v for k, v in defaults.items()
            if k != "alpha_step" and not isinstance(v, bool)
            and (isinstance(v, (int, float)) or (isinstance(v, tuple) and all(isinstance(e, float) for e in v)))}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_non_finite_or_non_numeric_hyperparameters_are_refused(case: Case) -> None:
    numeric = _numeric_defaults(case)
    assert "lr" in numeric
    argument = {"momentum": "beta"} if case.name in ("momo", "rsgdm") else {}  # group key -> constructor name
    for key, value in numeric.items():
        for bad, why in _bad_values(key, value, case):
            with pytest.raises(ValueError, match=key):
                case.cls(make_model().parameters(), **{**case.train_kwargs, argument.get(key, key): bad})
            params = list(make_model().parameters())
            optimizer = case.cls(params[:2], **case.train_kwargs)
            with pytest.raises(ValueError, match=key):
                optimizer.add_param_group({"params": params[2:], key: bad})
            assert len(optimizer.param_groups) == 1, f"{key}={bad!r} ({why}) was added"


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("momo")], ids=str)
def test_momo_lr_inf_is_the_uncapped_method(case: Case) -> None:
    model_a, uncapped = build(case, lr=math.inf)
    model_b, huge_cap = build(case, lr=1e300)
    train(model_a, uncapped, 6)
    train(model_b, huge_cap, 6)
    assert same_params(model_a, model_b)
    assert all(torch.isfinite(p).all() for p in model_a.parameters())
    with pytest.raises(ValueError, match="lr=inf.*weight_decay"):
        case.cls(make_model().parameters(), lr=math.inf, weight_decay=0.1)


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("momo")], ids=str)
def test_momo_infinite_lower_bound_state_loads(case: Case) -> None:
    """lower_bound=-inf (MoMo is then SGD-M / Adam) is a legitimate infinite global scalar."""
    model, optimizer = build(case, lower_bound=-math.inf)
    train(model, optimizer, 3)
    assert optimizer.global_state["lower_bound"] == -math.inf
    assert_loaded_run_continues_exactly(case, model, optimizer, state_snapshot(optimizer))
    saved = state_snapshot(optimizer)
    saved[GLOBAL_KEY]["loss_avg"] = torch.full_like(saved[GLOBAL_KEY]["loss_avg"], math.inf)
    with pytest.raises(ValueError, match="loss_avg"):
        case.cls(clone_model(model).parameters(), **case.train_kwargs).load_state_dict(saved)


def _corrupt(saved: dict, defect: str) -> bool:
    """Apply ``defect`` to a state_dict in place; False where this optimizer has nothing to corrupt."""
    entries = [e for e in saved["state"].values() if e]
    entry = entries[0]
    tensors = [k for k, v in entry.items() if torch.is_tensor(v) and v.dim() > 0]
    if defect in ("nan_in_state", "inf_in_state"):
        entry[tensors[0]] = entry[tensors[0]].clone()
        entry[tensors[0]].view(-1)[0] = math.nan if defect == "nan_in_state" else math.inf
    elif defect == "nan_in_global":
        if not saved[GLOBAL_KEY]:
            return False
        key = next(iter(saved[GLOBAL_KEY]))
        saved[GLOBAL_KEY][key] = torch.full_like(saved[GLOBAL_KEY][key], math.nan)
    elif defect == "missing_key":
        if len(entry) < 2:
            return False  # an emptied entry is a parameter without state, which is legitimate (frozen so far)
        del entry[tensors[0]]
    elif defect == "entry_not_a_dict":
        saved["state"][next(k for k, v in saved["state"].items() if v)] = 3.0
    elif defect == "value_not_a_tensor":
        entry[tensors[0]] = "zeros"
    elif defect == "step_not_a_number":
        if "step" in entry:
            entry["step"] = "3"
        elif "step" in saved[GLOBAL_KEY]:
            saved[GLOBAL_KEY]["step"] = "3"
        else:
            return False
    return True


DEFECTS = {
    "nan_in_state": "non-finite", "inf_in_state": "non-finite", "nan_in_global": "nan",
    "missing_key": "truncated", "entry_not_a_dict": "must be a dict", "value_not_a_tensor": "must be a tensor",
    "step_not_a_number": "step",
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_state_is_refused_and_changes_nothing(case: Case) -> None:
    model, optimizer = build(case)
    train(model, optimizer, 2)
    good = state_snapshot(optimizer)
    target_model, target = build(case, make_model(seed=3))
    train(target_model, target, 1)
    for defect, message in DEFECTS.items():
        saved = copy.deepcopy(good)
        if not _corrupt(saved, defect):
            continue
        before = state_snapshot(target)
        with pytest.raises(ValueError, match=message):
            target.load_state_dict(saved)
        assert_same_state(state_snapshot(target), before)
    train(target_model, target, 1, start=1)  # still usable
    assert all(torch.isfinite(p).all() for p in target_model.parameters())


@pytest.mark.parametrize("source", CASES, ids=str)
def test_state_of_another_optimizer_is_refused(source: Case) -> None:
    model, optimizer = build(source)
    train(model, optimizer, 2)
    saved = state_snapshot(optimizer)
    for target_case in CASES:
        if target_case is source:
            continue
        target_model, target = build(target_case)
        train(target_model, target, 1)
        before = state_snapshot(target)
        with pytest.raises(ValueError, match="another optimizer"):
            target.load_state_dict(copy.deepcopy(saved))
        assert_same_state(state_snapshot(target), before)
