"""DTensor (FSDP2) support for the optimizers' multi-tensor kernels: how a parameter lies across ranks,
and a fallback that runs foreach ops DTensor cannot shard on the local shards."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tunefree.optim.kernels import local_tensor

__all__ = ["LocalShardFallback", "is_dtensor", "layout", "localise"]


def layout(param: Tensor) -> str:
    """How ``param`` lies across ranks: "sharded" (only Shard placements), "replicated" (a plain tensor or
    a DTensor without Shard placements) or "mixed" (e.g. HSDP's (Replicate, Shard))."""
    placements = getattr(param, "placements", None)
    if placements is None or not any(p.is_shard() for p in placements):
        return "replicated"
    return "sharded" if all(p.is_shard() for p in placements) else "mixed"


def is_dtensor(tensor: Any) -> bool:
    return isinstance(tensor, Tensor) and hasattr(tensor, "device_mesh") and hasattr(tensor, "to_local")


def localise(value: Any) -> Any:
    if isinstance(value, Tensor):
        return local_tensor(value)
    if isinstance(value, (list, tuple)):
        return type(value)(local_tensor(v) if isinstance(v, Tensor) else v for v in value)
    return value


class LocalShardFallback(torch.overrides.TorchFunctionMode):
    """Runs a ``torch._foreach_*`` op on the local shards of its DTensor arguments when DTensor has no
    sharding rule for it (torch 2.13 has none for e.g. ``_foreach_copy_``) or its lists mix DTensors with
    plain tensors.

    Active only inside ``step()`` of an optimizer with DTensor parameters (FSDP2). Every other op, and
    every foreach op that DTensor supports, runs unchanged. Foreach ops are elementwise, so the local
    shards are all they touch: in-place ops write through to the DTensors; new tensors are wrapped back
    as DTensors with the mesh and placements of the matching input.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not name.startswith("_foreach_"):
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except (NotImplementedError, RuntimeError) as error:
            # No sharding rule, or a list mixing DTensors and plain tensors (DTensor refuses both).
            if not isinstance(error, NotImplementedError) and "mixed torch.Tensor and DTensor" not in str(error):
                raise
            templates = next(
                (a for a in args if isinstance(a, (list, tuple)) and any(is_dtensor(t) for t in a)), None
            )
            if templates is None:
                raise
        with torch.no_grad():
            out = func(*[localise(a) for a in args], **{k: localise(v) for k, v in kwargs.items()})
        if name.endswith("_") or not isinstance(out, (list, tuple)):
            return out
        from torch.distributed.tensor import DTensor

        return [
            DTensor.from_local(o, t.device_mesh, t.placements, run_check=False, shape=t.shape, stride=t.stride())
            if is_dtensor(t) and isinstance(o, Tensor) and o.shape == local_tensor(t).shape else o
            for o, t in zip(out, templates)
        ]
