"""What the ranks run (module-level functions, so that they can be sent to spawned processes), and the
single-process full-batch reference they are compared with.

The model is a small float64 MLP whose tensors shard unevenly over two ranks on dim 0 (5 -> 3 + 2 rows, and
1 -> 1 + 0: rank 1 holds an empty shard of the last layer), the data a fixed regression batch of 16 rows;
rank ``r`` of a data-parallel run trains on rows ``8r .. 8r+7``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tunefree import available_optimizers, get_optimizer_info

STEPS = 20
BATCH = 16
#: per-optimizer settings of these tests: MoMo-Adam's default cap (1e-2) is active at every step of this
#: problem, which would hide the loss from the step; at 0.1 the Polyak step is the binding one
RUN_KWARGS: dict[str, dict[str, Any]] = {"momo_adam": {"lr": 0.1}}


def create(name: str, params: Any, **kwargs: Any) -> Any:
    return get_optimizer_info(name).create(params, **{**RUN_KWARGS.get(name, {}), **kwargs})


def tunefree_optimizers() -> list[tuple[str, Optional[str]]]:
    """(name, reason it cannot be imported yet or None) for every non-baseline registered optimizer."""
    rows = []
    for info in available_optimizers(include_baselines=False):
        try:
            info.cls  # noqa: B018 - imports the module
            rows.append((info.name, None))
        except (ImportError, AttributeError) as error:
            rows.append((info.name, f"{type(error).__name__}: {error}"))
    return rows


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1),
    ).to(torch.float64)


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(BATCH, 4, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(BATCH, 1, generator=gen, dtype=torch.float64)
    return x, y


def shard_of_batch(rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_data()
    size = BATCH // world
    return x[rank * size:(rank + 1) * size], y[rank * size:(rank + 1) * size]


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).pow(2).mean()


def one_step(name: str, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor,
             grad_hook: Optional[Callable[[nn.Module], None]] = None) -> torch.Tensor:
    """One step the way a training loop calls it: a closure for closure methods, else ``step(loss=)``."""
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model)
        return loss

    if get_optimizer_info(name).needs_closure:
        return optimizer.step(closure)
    loss = closure()
    optimizer.step(loss=loss)
    return loss


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.cpu().numpy().copy()


def snapshot(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    return {
        "params": {key: _numpy(value) for key, value in model.named_parameters()},
        "stats": {key: float(value) for key, value in getattr(optimizer, "stats", {}).items()},
    }


def train(name: str, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, steps: int = STEPS) -> None:
    for _ in range(steps):
        one_step(name, model, optimizer, x, y)


# ---------------------------------------------------------------------------------------- reference
def reference_run(name: str, steps: int = STEPS, **kwargs: Any) -> dict[str, Any]:
    """Single process, full batch, no process group."""
    model = make_model()
    optimizer = create(name, model.parameters(), process_group="none", **kwargs)
    x, y = make_data()
    train(name, model, optimizer, x, y, steps)
    return snapshot(model, optimizer)


# ---------------------------------------------------------------------------------------- DDP
def ddp_run(name: str, steps: int = STEPS, *, subgroup: Optional[str] = None, **kwargs: Any) -> dict[str, Any]:
    """DDP, half of the batch per rank.

    ``subgroup``: None (``process_group`` from kwargs or "auto"), ``"both"`` (an explicit group of both
    ranks, distinct from WORLD) or ``"self"`` (each rank alone in its own group). The groups the
    optimizer hands to ``all_reduce`` are recorded and returned.
    """
    from torch.nn.parallel import DistributedDataParallel

    import tunefree.optim._core as core

    rank, world = dist.get_rank(), dist.get_world_size()
    if subgroup == "both":
        kwargs["process_group"] = dist.new_group(list(range(world)))
    elif subgroup == "self":
        singles = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
        kwargs["process_group"] = singles[rank]
    model = make_model()
    ddp = DistributedDataParallel(model)
    optimizer = create(name, ddp.parameters(), **kwargs)

    seen_groups: list[str] = []
    original = core.dist.all_reduce

    def spy(tensor: torch.Tensor, *args: Any, **kw: Any) -> Any:
        group = kw.get("group", args[1] if len(args) > 1 else None)
        if group is kwargs.get("process_group", object()):
            seen_groups.append("explicit")
        elif group is None or group is dist.group.WORLD:
            seen_groups.append("world")
        else:
            seen_groups.append("other")
        return original(tensor, *args, **kw)

    core.dist.all_reduce = spy
    try:
        x, y = shard_of_batch(rank, world)
        train(name, ddp, optimizer, x, y, steps)
    finally:
        core.dist.all_reduce = original
    result = snapshot(model, optimizer)
    result["groups"] = sorted(set(seen_groups))
    return result


# ---------------------------------------------------------------------------------------- FSDP2
def _fsdp_model(seed: int = 0) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = make_model(seed)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def fsdp_run(name: str, steps: int = STEPS, *, block: Optional[int] = None, **kwargs: Any) -> dict[str, Any]:
    """FSDP2 (``fully_shard``, parameters are DTensors sharded on dim 0), half of the batch per rank.

    ``block``: run the elementwise kernels' CPU cache blocking with blocks of this many elements, so that
    these small tensors get cut into slices as large ones are (default: the library's block size).
    """
    import tunefree.optim.kernels as kernels

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _fsdp_model()
    placements = sorted({str(p.placements) for p in model.parameters()})
    local_numel = sum(p.to_local().numel() for p in model.parameters())
    optimizer = create(name, model.parameters(), **kwargs)
    x, y = shard_of_batch(rank, world)
    default_block = getattr(kernels, "CPU_BLOCK_NUMEL", None)
    if block is not None:
        kernels.CPU_BLOCK_NUMEL = block
    try:
        train(name, model, optimizer, x, y, steps)
    finally:
        if default_block is not None:
            kernels.CPU_BLOCK_NUMEL = default_block
    state_types = sorted({type(v).__name__ for s in optimizer.state.values() for v in s.values()
                          if isinstance(v, torch.Tensor) and v.dim() > 0})
    result = snapshot(model, optimizer)
    result.update(placements=placements, local_numel=local_numel, state_types=state_types)
    return result


def fsdp_resume(name: str, steps: int = STEPS, **kwargs: Any) -> dict[str, Any]:
    """FSDP2: save the optimizer's state_dict (DTensor state) half-way, load it into a fresh optimizer over
    the restored parameters, continue; return the uninterrupted and the resumed results."""
    import copy

    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = shard_of_batch(rank, world)
    model = _fsdp_model()
    optimizer = create(name, model.parameters(), **kwargs)
    train(name, model, optimizer, x, y, steps // 2)
    saved_params = [p.detach().to_local().clone() for p in model.parameters()]
    saved_state = copy.deepcopy(optimizer.state_dict())
    train(name, model, optimizer, x, y, steps - steps // 2)
    uninterrupted = snapshot(model, optimizer)

    with torch.no_grad():
        for param, value in zip(model.parameters(), saved_params):
            param.to_local().copy_(value)
    fresh = create(name, model.parameters(), **kwargs)
    fresh.load_state_dict(saved_state)
    train(name, model, fresh, x, y, steps - steps // 2)
    return {"uninterrupted": uninterrupted, "resumed": snapshot(model, fresh)}


def fsdp_nonfinite(name: str, policy: str, bad_rank: int = 0) -> dict[str, Any]:
    """FSDP2: a NaN only in ``bad_rank``'s gradient shard; every rank must refuse/skip the step together."""
    from tunefree import NonFiniteError

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _fsdp_model()
    optimizer = create(name, model.parameters(), nonfinite=policy)
    x, y = shard_of_batch(rank, world)
    train(name, model, optimizer, x, y, 3)
    before = snapshot(model, optimizer)

    def poison(module: nn.Module) -> None:
        if dist.get_rank() == bad_rank:
            grad = next(module.parameters()).grad
            grad.to_local().view(-1)[0] = float("nan")

    outcome = "stepped"
    try:
        one_step(name, model, optimizer, x, y, grad_hook=poison)
    except NonFiniteError:
        outcome = "raised"
    after = snapshot(model, optimizer)
    skipped = optimizer.global_state.get("skipped_steps")
    # the ranks can still work together afterwards
    one_step(name, model, optimizer, x, y)
    return {
        "outcome": outcome, "before": before, "after": after,
        "skipped": None if skipped is None else int(skipped),
        "finite_after": all(np.isfinite(v).all() for v in snapshot(model, optimizer)["params"].values()),
    }


def partly_sharded(name: str) -> str:
    """FSDP2 on the first layer only: the other parameters stay plain (replicated) tensors. Summing their
    partial sums across ranks would count them twice, so a loss-aware optimizer must refuse. Returns the
    error message (every rank must raise it, none may hang)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model()
    fully_shard(model[0], mesh=init_device_mesh("cpu", (world,)))
    optimizer = create(name, model.parameters())
    x, y = shard_of_batch(rank, world)
    try:
        train(name, model, optimizer, x, y, 3)  # GALA reduces from its second step on
    except NotImplementedError as error:
        return str(error)
    return "no error"


def fsdp_dcp_resume(name: str, path: str, steps: int = STEPS, flatten: bool = False, **kwargs: Any) -> dict[str, Any]:
    """FSDP2 through ``torch.distributed.checkpoint``: ``get_optimizer_state_dict`` + ``dcp.save`` half-way,
    then a fresh model (other init) and optimizer are restored with ``dcp.load`` into their own template +
    ``set_*_state_dict`` and continue; returns the uninterrupted and the resumed results and the global
    scalars at the save and after the load."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(flatten_optimizer_state_dict=flatten)
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = shard_of_batch(rank, world)
    model = _fsdp_model()
    optimizer = create(name, model.parameters(), **kwargs)
    train(name, model, optimizer, x, y, steps // 2)
    saved_global = {key: float(value) for key, value in optimizer.global_state.items()}
    dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer, options=options)},
             checkpoint_id=path)
    train(name, model, optimizer, x, y, steps - steps // 2)
    uninterrupted = snapshot(model, optimizer)

    fresh_model = _fsdp_model(seed=5)
    fresh = create(name, fresh_model.parameters(), **kwargs)
    template = {"model": get_model_state_dict(fresh_model),
                "optim": get_optimizer_state_dict(fresh_model, fresh, options=options)}
    dcp.load(template, checkpoint_id=path)
    set_model_state_dict(fresh_model, template["model"])
    set_optimizer_state_dict(fresh_model, fresh, template["optim"], options=options)
    loaded_global = {key: float(value) for key, value in fresh.global_state.items()}
    state_types = sorted({type(v).__name__ for s in fresh.state.values() for v in s.values()
                          if isinstance(v, torch.Tensor) and v.dim() > 0})
    train(name, fresh_model, fresh, x, y, steps - steps // 2)
    return {"uninterrupted": uninterrupted, "resumed": snapshot(fresh_model, fresh),
            "saved_global": saved_global, "loaded_global": loaded_global, "state_types": state_types}


# ---------------------------------------------------------------------------------------- ZeRO
def zero_run(name: str, steps: int = STEPS, **kwargs: Any) -> dict[str, Any]:
    """``ZeroRedundancyOptimizer(optimizer_class=<tunefree class>)`` over DDP, half of the batch per rank:
    each rank's optimizer holds a partition of the parameters. Returns the result, or the error message
    when the construction is refused (``{"refused": message}``)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    info = get_optimizer_info(name)
    options = {"lr": info.default_lr, **info.fixed_kwargs, **RUN_KWARGS.get(name, {}), **kwargs}
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model()
    ddp = DistributedDataParallel(model)
    try:
        optimizer = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=info.cls, **options)
    except ValueError as error:
        return {"refused": str(error)}
    local = optimizer.optim
    x, y = shard_of_batch(rank, world)
    train(name, ddp, optimizer, x, y, steps)  # step(loss=...) reaches the local optimizer through ZeRO
    result = snapshot(model, local)
    result["local_params"] = sum(len(g["params"]) for g in local.param_groups)
    return result


def fsdp_full_state_dict_resume(name: str, steps: int = STEPS, **kwargs: Any) -> dict[str, Any]:
    """FSDP2, the "one full checkpoint file" path: ``get_*_state_dict(full_state_dict=True, cpu_offload=True)``
    (rank 0 holds everything, the others nothing), then ``set_*_state_dict(broadcast_from_rank0=True)``
    into a fresh model and optimizer; returns the uninterrupted and resumed results and the global scalars."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = shard_of_batch(rank, world)
    model = _fsdp_model()
    optimizer = create(name, model.parameters(), **kwargs)
    train(name, model, optimizer, x, y, steps // 2)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    saved_global = {key: float(value) for key, value in optimizer.global_state.items()}
    train(name, model, optimizer, x, y, steps - steps // 2)
    uninterrupted = snapshot(model, optimizer)

    fresh_model = _fsdp_model(seed=5)
    fresh = create(name, fresh_model.parameters(), **kwargs)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=True)
    set_model_state_dict(fresh_model, model_state, options=options)
    set_optimizer_state_dict(fresh_model, fresh, optim_state, options=options)
    loaded_global = {key: float(value) for key, value in fresh.global_state.items()}
    train(name, fresh_model, fresh, x, y, steps - steps // 2)
    return {"uninterrupted": uninterrupted, "resumed": snapshot(fresh_model, fresh),
            "saved_global": saved_global, "loaded_global": loaded_global}
