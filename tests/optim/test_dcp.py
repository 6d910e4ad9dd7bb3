"""``torch.distributed.checkpoint`` (DCP) on one process, for every row of the case table.

* DCP's state-initialising call (every gradient zero, every lr 0, a bare ``step()``) creates the state and
  changes nothing: the run afterwards is bitwise the run of a fresh optimizer;
* ``get_optimizer_state_dict`` -> ``dcp.save`` -> ``dcp.load`` into a fresh optimizer's template ->
  ``set_optimizer_state_dict`` keeps the whole state, global scalars included, in both of DCP's layouts
  (nested, and ``flatten_optimizer_state_dict=True``): continuing equals the uninterrupted run, bitwise;
* plain ``state_dict()`` checkpoints of tunefree 0.1 (global scalars in a top-level dict) still load.

The two-rank FSDP2 version is in ``tests/dist``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from tunefree.optim.checkpoint import GLOBAL_KEY, PLACEHOLDER_KEY

from .cases import CASES, Case
from .helpers import make_model, train

STEPS = 6


def build(case: Case, seed: int = 0):
    model = make_model(seed=seed)
    return model, case.cls(model.parameters(), **case.train_kwargs)


def params_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same_params(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"{what}: parameter {i} differs by {float((x - y).abs().max()):.3e}"


def assert_same_global_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: global state keys {sorted(a)} != {sorted(b)}"
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), f"{what}: global state {key!r}: {a[key]} != {b[key]}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_state_initialising_step_changes_nothing(case: Case) -> None:
    model, optimizer = build(case)
    before = params_of(model)
    get_optimizer_state_dict(model, optimizer)  # runs DCP's _init_optim_state: zero grads, lr 0, step()
    assert_same_params(before, params_of(model), f"{case}: DCP's initialising step")
    assert optimizer.state, f"{case}: the initialising step created no per-parameter state"
    assert set(optimizer.global_state) == {PLACEHOLDER_KEY}, sorted(optimizer.global_state)
    assert all(p.grad is None for p in model.parameters())  # DCP resets them; the optimizer kept none

    train(model, optimizer, STEPS)
    fresh_model, fresh = build(case)
    train(fresh_model, fresh, STEPS)
    assert_same_params(params_of(fresh_model), params_of(model), f"{case}: run after the initialising step")
    assert_same_global_state(fresh.global_state, optimizer.global_state, str(case))


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_dcp_save_load_resumes_exactly(case: Case, flatten: bool, tmp_path) -> None:
    options = StateDictOptions(flatten_optimizer_state_dict=flatten)
    model, optimizer = build(case)
    train(model, optimizer, STEPS)
    saved_global = {key: value.clone() for key, value in optimizer.global_state.items()}
    if case.needs_loss or case.needs_closure:  # MoMo's averages, GALA's FTRL sums: what DCP used to drop
        assert saved_global, f"{case}: no global scalars after {STEPS} steps"
    saved = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer, options=options)}
    dcp.save(saved, checkpoint_id=str(tmp_path))
    train(model, optimizer, STEPS, start=STEPS)

    resumed_model, resumed = build(case, seed=7)  # other init: everything must come from the checkpoint
    template = {"model": get_model_state_dict(resumed_model),
                "optim": get_optimizer_state_dict(resumed_model, resumed, options=options)}
    dcp.load(template, checkpoint_id=str(tmp_path))
    set_model_state_dict(resumed_model, template["model"])
    set_optimizer_state_dict(resumed_model, resumed, template["optim"], options=options)
    assert_same_global_state(saved_global, resumed.global_state, f"{case}: loaded global state")
    assert GLOBAL_KEY in resumed.param_groups[0] and resumed.param_groups[0][GLOBAL_KEY] is None

    train(resumed_model, resumed, STEPS, start=STEPS)
    assert_same_params(params_of(model), params_of(resumed_model), f"{case}: resumed through DCP")
    assert_same_global_state(optimizer.global_state, resumed.global_state, f"{case}: after resuming")
    for key, value in optimizer.stats.items():
        assert torch.equal(value, resumed.stats[key]), f"{case}: stats[{key!r}]"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("momo", "gala")], ids=str)
def test_tunefree_0_1_state_dict_still_loads(case: Case) -> None:
    """0.1 kept the global scalars as a top-level dict of tensors; such a checkpoint resumes exactly."""
    model, optimizer = build(case)
    train(model, optimizer, STEPS)
    state = copy.deepcopy(optimizer.state_dict())  # state_dict() holds references to the live state
    encoded = state["param_groups"][0].pop(GLOBAL_KEY)
    old_format = dict(state, **{GLOBAL_KEY: {k: v.clone() for k, v in optimizer.global_state.items()}})
    assert json.loads(encoded).keys() == optimizer.global_state.keys()
    resumed_model, resumed = build(case, seed=7)
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(old_format)
    train(model, optimizer, STEPS, start=STEPS)
    train(resumed_model, resumed, STEPS, start=STEPS)
    assert_same_params(params_of(model), params_of(resumed_model), f"{case}: resumed from a 0.1 state_dict")


def test_malformed_global_state_is_refused() -> None:
    model, optimizer = build(CASES[0])
    train(model, optimizer, 2)
    state = optimizer.state_dict()
    state["param_groups"][0][GLOBAL_KEY] = "{not json"
    before = {k: v.clone() for k, v in optimizer.global_state.items()}
    with pytest.raises(ValueError, match="not valid JSON"):
        optimizer.load_state_dict(state)
    assert_same_global_state(before, optimizer.global_state, "after a refused load")
