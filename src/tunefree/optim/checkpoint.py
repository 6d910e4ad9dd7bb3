"""How a tunefree optimizer's state crosses checkpoint boundaries, including ``torch.distributed.checkpoint``.

torch's optimizer ``state_dict()`` has two sections: ``"state"`` (per-parameter tensors) and
``"param_groups"`` (hyperparameters). tunefree optimizers also keep **global scalars**
(:attr:`~tunefree.optim._core.TunefreeOptimizer.global_state`: MoMo's loss and ``<g, x>`` averages and lower
bound, GALA's FTRL sums and learning rate, step counters, ``skipped_steps``), which belong to no parameter.

Where they travel
-----------------
``torch.distributed.checkpoint`` (DCP) rebuilds the optimizer state dict from those two sections only:
``get_optimizer_state_dict`` re-keys ``"state"`` by parameter FQN and keeps ``"param_groups"``, every other
top-level key is dropped. With ``flatten_optimizer_state_dict=True`` it goes further and keeps only the keys
that the *live* optimizer has, in ``optimizer.state[param]`` and in ``optimizer.param_groups[i]``. And
``dcp.load`` fills in a *template* (the state dict of a freshly built optimizer) rather than returning what
was saved, so whatever carries the scalars must exist, under the same key, before the first step.

So the global scalars travel as **one JSON string under** ``param_groups[0]["tunefree_global_state"]``
(:data:`GLOBAL_KEY`):

* a string is a leaf for DCP: saved once as a replicated object (one copy, whatever the number of ranks),
  loaded wholesale, so a template needs only the key, not the same scalars (a fresh optimizer has none);
* JSON keeps Python floats exactly (shortest round-trip ``repr``), ints as ints, and ``NaN``/``Infinity``;
  the scalars come back as tensors on the optimizer's scalar device and dtype, as before;
* the live ``param_groups[0]`` holds the key with the value ``None`` (``flatten_optimizer_state_dict`` needs
  it there); ``state_dict()`` writes the current scalars in its place.

Checkpoints of tunefree 0.1 (a top-level ``"tunefree_global_state"`` dict of tensors) still load.

DCP's state-initialising step
-----------------------------
Before it saves or loads, DCP creates the optimizer state of a fresh optimizer by setting every gradient to
zero, every ``lr`` to 0 and calling a bare ``step()`` (``_init_optim_state`` in
``torch/distributed/checkpoint/state_dict.py``). MoMo, MoMo-Adam and GALA cannot step without a loss or a
closure, and for every method a real step would advance counters and moving averages. A call that matches
DCP's exactly -- no closure, no loss, no per-parameter state yet, every ``lr`` zero and every gradient zero
(decided across the process group, so that the ranks agree) -- therefore only creates the per-parameter
state and returns ``None``: parameters, counters and averages are untouched.

That state is a *placeholder*: some methods start their state from the first gradient (MoMo's first-value
momentum, RSGDM's ``first_step="zero_diff"``), which the zero gradient is not. The optimizer marks it with
the global entry :data:`PLACEHOLDER_KEY` (saved and loaded like the other scalars); the first real step
drops the placeholder state, so it equals the first step of a fresh optimizer. Loading a checkpoint
replaces the placeholder as usual.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from tunefree.optim.kernels import local_tensor

__all__ = [
    "GLOBAL_KEY",
    "PLACEHOLDER_KEY",
    "add_global_state",
    "ensure_global_state_key",
    "handle_state_initialising_step",
    "split_global_state",
]

#: key of the global scalars in ``param_groups[0]`` (and, in tunefree 0.1 checkpoints, at the top level)
GLOBAL_KEY = "tunefree_global_state"
#: global-state entry marking per-parameter state created by DCP's state-initialising step
PLACEHOLDER_KEY = "placeholder_state"


# ------------------------------------------------------------------------------------- global scalars
def ensure_global_state_key(optimizer: torch.optim.Optimizer) -> None:
    """Give the live first param group the (empty) global-state key, as DCP's flattened format needs."""
    if optimizer.param_groups:
        optimizer.param_groups[0].setdefault(GLOBAL_KEY, None)


def add_global_state(state_dict: dict[str, Any], global_state: dict[str, Tensor]) -> dict[str, Any]:
    """Write ``global_state`` into ``state_dict["param_groups"][0]`` as a JSON string; returns ``state_dict``.

    ``torch.optim.Optimizer.state_dict`` returns fresh group dicts, so the live param groups are untouched.
    """
    values = {key: value.item() for key, value in global_state.items()}  # one host sync per scalar
    groups = state_dict["param_groups"]
    if groups:
        groups[0][GLOBAL_KEY] = json.dumps(values, allow_nan=True)
    for group in groups[1:]:
        group.pop(GLOBAL_KEY, None)
    return state_dict


def split_global_state(owner: str, state_dict: dict[str, Any]) -> tuple[dict[str, Any], Optional[dict[str, Tensor]]]:
    """``(state_dict without the global scalars, the global scalars as tensors or None if absent)``.

    The top-level dict (what ``state_dict()`` writes first, and all tunefree 0.1 wrote) wins over the JSON copy
    in ``param_groups[0]`` (the one ``torch.distributed.checkpoint`` keeps); a malformed copy is refused either way.
    ``state_dict`` itself is not modified. A malformed entry raises ``ValueError`` naming ``owner``.
    """
    rest = dict(state_dict)
    found: Any = rest.pop(GLOBAL_KEY, None)  # tunefree 0.1: {name: tensor}
    groups = rest.get("param_groups")
    if isinstance(groups, list):
        rest["param_groups"] = [dict(group) if isinstance(group, dict) else group for group in groups]
        for group in rest["param_groups"]:
            if isinstance(group, dict):
                encoded = group.pop(GLOBAL_KEY, None)
                if encoded is not None:
                    decoded = _decode(owner, encoded)  # checked even where the top-level entry wins
                    found = decoded if found is None else found
    if found is None:
        return rest, None
    if not isinstance(found, dict) or not all(isinstance(key, str) for key in found):
        raise ValueError(
            f"{owner}.load_state_dict: {GLOBAL_KEY!r} must map names to scalars, got {type(found).__name__}"
        )
    return rest, {key: _as_scalar_tensor(owner, key, value) for key, value in found.items()}


def _decode(owner: str, encoded: Any) -> Any:
    if isinstance(encoded, dict):  # a state dict edited by hand, or built by other code: accept the mapping
        return encoded
    if not isinstance(encoded, str):
        raise ValueError(
            f"{owner}.load_state_dict: param_groups[0][{GLOBAL_KEY!r}] must be the JSON string that "
            f"state_dict() writes, got {type(encoded).__name__}"
        )
    try:
        return json.loads(encoded)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{owner}.load_state_dict: param_groups[0][{GLOBAL_KEY!r}] is not valid JSON ({error}); "
            f"the checkpoint is corrupt"
        ) from None


def _as_scalar_tensor(owner: str, key: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{owner}.load_state_dict: global state {key!r} must be a scalar, got shape {tuple(value.shape)}"
            )
        return value.detach().reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.load_state_dict: global state {key!r} must be a number, got {value!r}")
    # ints stay int64 (counters such as skipped_steps), floats are float64 until the caller casts them
    return torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64)


# ------------------------------------------------------------------------------- state-initialising step
def handle_state_initialising_step(optimizer: Any, closure: Any, loss: Any) -> bool:
    """Called first thing in ``step()`` of ``optimizer`` (a :class:`~tunefree.optim._core.TunefreeOptimizer`;
    not imported, as _core imports this module).

    Returns True when the call is DCP's state-initialising step: the per-parameter state was created and
    nothing else changed, so ``step()`` must return at once. Otherwise drops placeholder state (before a
    real step) and returns False.
    """
    if torch.compiler.is_compiling():
        return False
    if closure is None and loss is None and _is_state_initialising_call(optimizer):
        optimizer.all_buckets()  # creates every parameter's state (init_param_state) and nothing else
        device, _ = optimizer.scalar_device_dtype()
        optimizer.global_state[PLACEHOLDER_KEY] = torch.ones((), dtype=torch.int64, device=device)
        return True
    if PLACEHOLDER_KEY in optimizer.global_state:
        # Any other call: the placeholder state came from zero gradients; start afresh from this step's
        # (a fresh optimizer, which the placeholder stands for, has no state).
        del optimizer.global_state[PLACEHOLDER_KEY]
        optimizer.state.clear()
    return False


def _is_state_initialising_call(optimizer: Any) -> bool:
    if optimizer._observed_loss is not None or optimizer.state:
        return False
    if not all(_is_zero(group.get("lr", None)) for group in optimizer.param_groups):
        return False
    grads = [local_tensor(p.grad) for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return False
    device, _ = optimizer.scalar_device_dtype()
    nonzero = torch.zeros(1, device=device)
    for grad in grads:
        if grad.numel():
            nonzero = torch.maximum(nonzero, (grad != 0).any().to(device=device, dtype=nonzero.dtype).reshape(1))
    group = optimizer._reduction_group()
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(nonzero, op=dist.ReduceOp.MAX, group=group)  # every rank decides the same
    return not bool(nonzero.item())


def _is_zero(lr: Any) -> bool:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        return False
    return value == 0.0
