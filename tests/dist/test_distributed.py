"""Every tunefree optimizer under a real process group: two gloo ranks on CPU, float64.

* DDP (replicated parameters, averaged gradients, half of the batch per rank) must equal the
  single-process full-batch run, with bitwise identical replicas;
* FSDP2 (``fully_shard``: DTensor parameters sharded on dim 0, some shards uneven or empty) must equal it
  too, after gathering the full parameters;
* the loss averaging and the choice of ``process_group`` are shown to matter (the replicas drift without
  them), so the equalities above can fail;
* a NaN in one rank's gradient shard stops the step on every rank; DTensor optimizer state survives a
  state_dict round trip.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.dist import _scenarios as sc

TOL = 1e-10


def _optimizer_params() -> list:
    params = []
    for name, problem in sc.tunefree_optimizers():
        marks = [pytest.mark.skip(reason=f"{name} does not import yet ({problem})")] if problem else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


OPTIMIZERS = _optimizer_params()
_reference_cache: dict = {}


def reference(name: str) -> dict:
    if name not in _reference_cache:
        _reference_cache[name] = sc.reference_run(name)
    return _reference_cache[name]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0 for k in a)


def assert_matches_reference(result: dict, ref: dict, what: str) -> None:
    diff = max_diff(result["params"], ref["params"])
    assert diff <= TOL, f"{what}: parameters differ from the single-process full-batch run by {diff:.3e}"
    moved = max_diff(ref["params"], sc.snapshot(sc.make_model(), None)["params"])
    assert moved > 1e-6, f"{what}: the reference run did not move the parameters ({moved:.2e}); vacuous test"
    for key, value in ref["stats"].items():
        got = result["stats"].get(key)
        assert got is not None and abs(got - value) <= TOL * max(1.0, abs(value)), (
            f"{what}: stats[{key!r}] = {got} but the single-process run has {value}"
        )


def assert_identical_replicas(results: list, what: str) -> None:
    first = results[0]["params"]
    for rank, result in enumerate(results[1:], start=1):
        for key, value in first.items():
            assert np.array_equal(value, result["params"][key]), (
                f"{what}: rank {rank} holds a different {key} than rank 0 "
                f"(max diff {np.max(np.abs(value - result['params'][key])):.3e})"
            )


# ------------------------------------------------------------------------------------------ DDP
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp_equals_full_batch(workers, name):
    results = workers.run(sc.ddp_run, name)
    assert_identical_replicas(results, f"{name}/DDP")
    for rank, result in enumerate(results):
        assert_matches_reference(result, reference(name), f"{name}/DDP rank {rank}")


@pytest.mark.parametrize("name", ["momo", "momo_adam"])
def test_ddp_without_loss_averaging_drifts(workers, name):
    """Control: with process_group="none" each rank sees only its own half-batch loss, so the adaptive
    step sizes differ and the replicas drift apart -- what reduce()'s loss averaging prevents."""
    results = workers.run(sc.ddp_run, name, process_group="none")
    stats = [r["stats"]["loss_avg"] for r in results]
    assert abs(stats[0] - stats[1]) > 1e-6, f"the ranks' loss averages should differ, got {stats}"
    drift = max_diff(results[0]["params"], results[1]["params"])
    assert drift > 1e-8, f"{name}: replicas should drift without loss averaging (max diff {drift:.2e})"


def test_ddp_explicit_subgroup_is_used(workers):
    """An explicit ProcessGroup (here: both ranks, a group object distinct from WORLD) is the one reduced
    over, and gives the same result as the default group."""
    results = workers.run(sc.ddp_run, "momo", subgroup="both")
    for rank, result in enumerate(results):
        assert result["groups"] == ["explicit"], f"rank {rank} reduced over {result['groups']}"
        assert_matches_reference(result, reference("momo"), f"momo/DDP subgroup rank {rank}")
    assert_identical_replicas(results, "momo/DDP subgroup")


def test_ddp_singleton_subgroups_do_not_reduce(workers):
    """Each rank alone in its group: nothing is reduced across ranks (the replicas drift), which shows the
    group argument, not WORLD, decides what is reduced."""
    results = workers.run(sc.ddp_run, "momo", subgroup="self")
    for rank, result in enumerate(results):
        assert "world" not in result["groups"], f"rank {rank} reduced over WORLD: {result['groups']}"
    assert max_diff(results[0]["params"], results[1]["params"]) > 1e-8


# ------------------------------------------------------------------------------------------ FSDP2
@pytest.mark.parametrize("block", [None, 3], ids=["blocks-default", "blocks-3"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fsdp2_equals_full_batch(workers, name, block):
    """``blocks-3``: the CPU cache blocking of the elementwise kernels cuts every tensor into 3-element
    slices, as it cuts large tensors (slicing the DTensor itself would update a copy, not the shard)."""
    results = workers.run(sc.fsdp_run, name, block=block)
    for rank, result in enumerate(results):
        assert result["placements"] == ["(Shard(dim=0),)"], result["placements"]
        assert_matches_reference(result, reference(name), f"{name}/FSDP2 rank {rank}")
    # the ranks really hold different parts (uneven: 5 -> 3+2 rows, 1 -> 1+0)
    assert results[0]["local_numel"] != results[1]["local_numel"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fsdp2_state_dict_resume(workers, name):
    results = workers.run(sc.fsdp_resume, name)
    for rank, result in enumerate(results):
        diff = max_diff(result["uninterrupted"]["params"], result["resumed"]["params"])
        assert diff == 0.0, f"{name}/FSDP2 rank {rank}: resumed run differs by {diff:.3e}"
        assert result["resumed"]["stats"] == result["uninterrupted"]["stats"]


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_fsdp2_nan_in_one_shard_stops_every_rank(workers, policy):
    results = workers.run(sc.fsdp_nonfinite, "momo", policy)
    expected = "raised" if policy == "raise" else "stepped"
    for rank, result in enumerate(results):
        assert result["outcome"] == expected, f"rank {rank}: {result['outcome']}"
        diff = max_diff(result["before"]["params"], result["after"]["params"])
        assert diff == 0.0, f"rank {rank}: parameters changed by a refused step ({diff:.3e})"
        if policy == "skip":
            assert result["skipped"] == 1, f"rank {rank}: skipped_steps = {result['skipped']}"
        assert result["finite_after"]


@pytest.mark.parametrize("name", ["momo", "gala"])
def test_partly_sharded_model_is_refused(workers, name):
    """Sharded and replicated parameters in one optimizer: the global sums cannot be formed by one rule,
    so the step is refused with a clear error on every rank (instead of silently double counting)."""
    if dict(sc.tunefree_optimizers()).get(name, "missing") is not None:
        pytest.skip(f"{name} not importable")
    messages = workers.run(sc.partly_sharded, name)
    for rank, message in enumerate(messages):
        assert "not supported" in message and "replicated" in message, f"rank {rank}: {message}"


# ------------------------------------------------------------------------------------------ DCP
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fsdp2_dcp_resume(workers, name, tmp_path):
    """``get_optimizer_state_dict`` + ``dcp.save`` / ``dcp.load`` + ``set_optimizer_state_dict`` under FSDP2:
    the global scalars (MoMo's averages, GALA's FTRL sums) survive, and continuing equals the uninterrupted
    run bitwise on every rank."""
    flatten_cases = ("momo",)  # torchtitan's layout (flatten_optimizer_state_dict=True); all methods: tests/optim
    for flatten in (False, True) if name in flatten_cases else (False,):
        results = workers.run(sc.fsdp_dcp_resume, name, str(tmp_path / f"flatten-{flatten}"), flatten=flatten)
        for rank, result in enumerate(results):
            what = f"{name}/FSDP2/DCP (flatten={flatten}) rank {rank}"
            assert result["loaded_global"] == result["saved_global"], what
            assert result["state_types"] in ([], ["DTensor"]), (what, result["state_types"])
            diff = max_diff(result["uninterrupted"]["params"], result["resumed"]["params"])
            assert diff == 0.0, f"{what}: resumed run differs by {diff:.3e}"
            assert result["resumed"]["stats"] == result["uninterrupted"]["stats"], what



def test_fsdp2_full_state_dict_broadcast_resume(workers):
    """The full-checkpoint path (``full_state_dict=True, cpu_offload=True`` on rank 0, loaded with
    ``broadcast_from_rank0=True``) carries MoMo's global scalars to every rank too."""
    for rank, result in enumerate(workers.run(sc.fsdp_full_state_dict_resume, "momo")):
        assert result["loaded_global"] == result["saved_global"], f"rank {rank}"
        diff = max_diff(result["uninterrupted"]["params"], result["resumed"]["params"])
        assert diff == 0.0, f"momo/FSDP2 full state dict rank {rank}: resumed run differs by {diff:.3e}"

# ------------------------------------------------------------------------------------------ ZeRO
@pytest.mark.parametrize("name", ["momo", "momo_adam", "smes", "agd", "rsgdm"])
def test_zero_redundancy_equals_full_batch(workers, name):
    """torch's ZeroRedundancyOptimizer partitions the parameters over the ranks; the global sums of the
    step size are added across them (not taken from one rank's partition), so every rank equals the
    single-process full-batch run. (Before: 0.6 apart after 20 steps, with no error.)"""
    results = workers.run(sc.zero_run, name)
    assert all(0 < r["local_params"] < 6 for r in results), [r["local_params"] for r in results]
    assert_identical_replicas(results, f"{name}/ZeRO")
    for rank, result in enumerate(results):
        assert_matches_reference(result, reference(name), f"{name}/ZeRO rank {rank}")


def test_zero_redundancy_refuses_gala(workers):
    """GALA's second closure pass needs every parameter at its previous point, which a rank holding one
    partition cannot provide: refused at construction on every rank, never run silently."""
    for rank, result in enumerate(workers.run(sc.zero_run, "gala")):
        message = result.get("refused", "not refused")
        assert "cannot run inside torch.distributed.optim.ZeroRedundancyOptimizer" in message, f"rank {rank}: {message}"


def test_zero_redundancy_needs_zero_process_group():
    """A tunefree process_group other than ZeRO's would reduce over the wrong ranks: refused (one process,
    the ZeRO object stands in for the real one)."""
    from types import SimpleNamespace

    import torch

    from tunefree import MoMo

    optimizer = MoMo([torch.zeros(2, requires_grad=True)], process_group="none")
    with pytest.raises(ValueError, match="leave process_group at 'auto'"):
        optimizer.join_zero_redundancy(SimpleNamespace(process_group=object()))
    assert not optimizer.params_partitioned
