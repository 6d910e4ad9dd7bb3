"""The one shared machinery every tunefree optimizer stands on.

An optimizer module holds its math and little else; everything a real training loop needs lives here:

* **argument validation** through :mod:`tunefree.optim.validation`;
* **loss intake**: ``step(closure)``, ``step(loss=...)`` (also through ``GradScaler.step(opt, loss=...)``)
  and :meth:`TunefreeOptimizer.observe_loss` followed by a bare ``step()`` (HF Trainer, Lightning fp16);
* **multi-tensor execution**: :meth:`TunefreeOptimizer.buckets` groups a param group's tensors by device and
  dtype so that a kernel runs ``torch._foreach_*`` ops (:mod:`tunefree.optim.kernels`) over each bucket,
  with :mod:`tunefree.optim._dtensor` covering what DTensor cannot shard;
* **global reductions**: :meth:`TunefreeOptimizer.reduce` packs a step's partial sums (and the loss) into
  one tensor and reduces it once, so sharded or data-parallel training is handled in one place;
* **scalar state in ``state_dict()``**: :attr:`TunefreeOptimizer.global_state` (loss averages, lower-bound
  estimates, step counters, FTRL sums) is saved and restored with the per-parameter state, also through
  ``torch.distributed.checkpoint`` (:mod:`tunefree.optim.checkpoint`);
* **observability**: :attr:`TunefreeOptimizer.stats` holds the method's adaptive quantities as 0-dim tensors;
* **a NaN/Inf policy**: a non-finite loss or gradient never reaches parameters or state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Literal, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

from tunefree.optim import checkpoint
from tunefree.optim._dtensor import LocalShardFallback, is_dtensor, layout
from tunefree.optim.kernels import CPU_BLOCK_NUMEL, block_numel, cache_blocks, local_tensor
from tunefree.optim.zero_redundancy import enclosing_zero_redundancy_optimizer

__all__ = ["Bucket", "Closure", "LossLike", "NonFiniteError", "TunefreeOptimizer"]

NonFinitePolicy = Literal["raise", "skip", "off"]
LossLike = Union[Tensor, float]
Closure = Callable[[], LossLike]


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN/Inf; the step was refused and nothing was changed."""

@dataclass
class Bucket:
    """The tensors of one param group that share a device and dtype, with their state aligned.

    ``state[key][i]`` is the state tensor ``key`` of ``params[i]``.
    """

    group: dict[str, Any]
    #: position of ``group`` in ``param_groups`` (set by :meth:`TunefreeOptimizer.all_buckets`)
    group_index: int = 0
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    state: dict[str, list[Tensor]] = field(default_factory=dict)


class TunefreeOptimizer(torch.optim.Optimizer):
    """Base class: a thin manager of groups and state around a subclass's math.

    Subclasses set :attr:`needs_loss`, implement :meth:`init_param_state` (lazy per-parameter state) and
    :meth:`update` (the math for one step, run under ``torch.no_grad()`` after the loss and gradients
    passed the NaN/Inf check). They never branch in Python on tensor values, so ``step()`` does not
    synchronise with the device (the NaN/Inf check, when on, is the one exception: see ``nonfinite``).

    Args:
        nonfinite: what a NaN/Inf loss or gradient does. ``"raise"`` (default): :class:`NonFiniteError`,
            with parameters and state untouched. ``"skip"``: the step is skipped (counted in
            ``stats["skipped_steps"]``). Both cost one host synchronisation per step. ``"off"``: no check,
            no synchronisation, as in ``torch.optim`` (use it under ``GradScaler``, which checks gradients
            itself, or in a ``torch.compile``-d step; compiled steps never run the check).
        process_group: group over which global quantities are reduced. ``"auto"`` (default): the default
            group when ``torch.distributed`` is initialised, else none. ``"none"``: never reduce (each
            process optimises on its own). Or an explicit ``ProcessGroup``.
    """

    needs_loss: ClassVar[bool] = False

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        nonfinite: NonFinitePolicy = "raise",
        process_group: Any = "auto",
    ) -> None:
        if nonfinite not in ("raise", "skip", "off"):
            raise ValueError(
                f"{type(self).__name__}: nonfinite must be 'raise', 'skip' or 'off', got {nonfinite!r}"
            )
        if isinstance(process_group, str) and process_group not in ("auto", "none"):
            raise ValueError(
                f"{type(self).__name__}: process_group must be 'auto', 'none' or a ProcessGroup, "
                f"got {process_group!r}"
            )
        super().__init__(params, defaults)
        checkpoint.ensure_global_state_key(self)
        self.nonfinite: NonFinitePolicy = nonfinite
        self.process_group = process_group
        self.global_state: dict[str, Tensor] = {}
        self.stats: dict[str, Tensor] = {}
        self._observed_loss: Optional[Tensor] = None
        # Persistent flat temporaries of the CPU block path (see :meth:`blocks`); never in state_dict().
        self._scratch: dict[tuple[torch.device, torch.dtype, int], Tensor] = {}
        #: this rank holds a partition of whole tensors (ZeroRedundancyOptimizer): see join_zero_redundancy
        self.params_partitioned = False
        zero = enclosing_zero_redundancy_optimizer()
        if zero is not None:
            self.join_zero_redundancy(zero)

    # ------------------------------------------------------------------ subclass interface
    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """Per-parameter state created at the parameter's first step (default: none)."""
        return {}

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        """The method's math for one step (inputs already checked)."""
        raise NotImplementedError

    def validate_group(self, group: dict[str, Any]) -> None:
        """Check a param group's hyperparameters (raise ``ValueError`` naming the argument)."""

    def join_zero_redundancy(self, zero: Any) -> None:
        """Called when ``torch.distributed.optim.ZeroRedundancyOptimizer`` builds this optimizer over its
        rank's partition of the parameters (whole tensors, each held by exactly one rank).

        The partial sums of :meth:`reduce` are then *added* across ZeRO's process group (not taken from
        rank 0 as for DDP replicas) and the loss averaged, so every rank computes the step size of the
        single-process run over all parameters. Subclasses whose step cannot be split by parameter refuse.
        """
        if not (self.process_group == "auto" or self.process_group is zero.process_group):
            raise ValueError(
                f"{type(self).__name__}: inside ZeroRedundancyOptimizer the global sums must be reduced over "
                f"ZeRO's own process group (each rank holds only part of the parameters), got "
                f"process_group={self.process_group!r}; leave process_group at 'auto'"
            )
        self.process_group = zero.process_group
        self.params_partitioned = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its hyperparameters are validated like the constructor's (the group is not added
        when they are invalid)."""
        super().add_param_group(param_group)
        try:
            self.validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    # ------------------------------------------------------------------ loss intake
    def observe_loss(self, loss: LossLike) -> None:
        """Hand over the mini-batch loss for the next bare ``step()``.

        For trainers that call ``optimizer.step()`` with no arguments (Hugging Face ``Trainer``,
        Lightning's fp16 path): call this after computing the loss, e.g. from a ``loss.backward`` hook
        or a callback. The loss must be the unscaled mean loss that matches the gradient.
        """
        self._observed_loss = self._as_loss_tensor(loss)

    def _as_loss_tensor(self, loss: LossLike) -> Tensor:
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(
                    f"{type(self).__name__}: the loss must be a scalar (one element), got shape "
                    f"{tuple(loss.shape)}; reduce it (e.g. .mean()) first"
                )
            return loss.detach().reshape(())
        if isinstance(loss, (int, float)):
            return torch.tensor(float(loss), dtype=torch.float64)
        raise TypeError(f"{type(self).__name__}: loss must be a tensor or a float, got {type(loss).__name__}")

    def _missing_loss_error(self) -> ValueError:
        name = type(self).__name__
        return ValueError(
            f"{name} needs the mini-batch loss at every step. Pass it in one of three ways: "
            f"(1) optimizer.step(closure) with a closure that computes the loss, calls backward() and "
            f"returns the loss; (2) optimizer.step(loss=loss) (also GradScaler.step(optimizer, loss=loss) "
            f"with the unscaled loss); (3) optimizer.observe_loss(loss) before a bare optimizer.step() "
            f"(for trainers that call step() without arguments)."
        )

    # ------------------------------------------------------------------ step
    def step(self, closure: Optional[Closure] = None, *, loss: Optional[LossLike] = None) -> Optional[LossLike]:  # type: ignore[override]
        """One optimisation step.

        Args:
            closure: re-evaluates the model on the current batch, calls ``backward()`` and returns the loss.
            loss: the loss that produced the current gradients (keyword-only), instead of a closure.

        Returns:
            The loss (the closure's return value, or ``loss``), as ``torch.optim`` optimizers do.
            ``None`` for ``torch.distributed.checkpoint``'s state-initialising call (see
            :mod:`tunefree.optim.checkpoint`), which only creates the per-parameter state.
        """
        if checkpoint.handle_state_initialising_step(self, closure, loss):
            return None
        if closure is not None and loss is not None:
            raise ValueError(f"{type(self).__name__}.step: pass either a closure or loss=, not both")
        returned: Optional[LossLike] = loss
        if closure is not None:
            with torch.enable_grad():
                returned = closure()
            if returned is None and self.needs_loss:
                raise ValueError(f"{type(self).__name__}.step: the closure returned None; it must return the loss")
        # The attribute is written only when it holds a loss: torch.compile (2.11) cannot trace a setattr
        # on the optimizer, and a compiled step passes loss= with nothing observed.
        loss_tensor: Optional[Tensor] = self._as_loss_tensor(returned) if returned is not None else self._observed_loss
        if self._observed_loss is not None:
            self._observed_loss = None
        if loss_tensor is None and self.needs_loss:
            raise self._missing_loss_error()

        with torch.no_grad():
            if self.nonfinite != "off" and not torch.compiler.is_compiling():
                if not self._all_finite(loss_tensor):
                    if self.nonfinite == "raise":
                        raise NonFiniteError(
                            f"{type(self).__name__}: non-finite loss or gradient (NaN/Inf); the step was "
                            f"refused and parameters and optimizer state are unchanged. Pass "
                            f"nonfinite='skip' to skip such steps instead."
                        )
                    skipped = self.global_state.get("skipped_steps", torch.zeros((), dtype=torch.int64))
                    self.global_state["skipped_steps"] = skipped + 1
                    self.stats["skipped_steps"] = self.global_state["skipped_steps"]
                    return returned
            with self._dtensor_fallback():
                self.update(loss_tensor, closure)
        return returned

    def _dtensor_fallback(self) -> Any:
        """Foreach ops that DTensor cannot shard run on local shards (see :class:`LocalShardFallback`)."""
        if torch.compiler.is_compiling() or not any(
            is_dtensor(p) for group in self.param_groups for p in group["params"]
        ):
            return contextlib.nullcontext()
        return LocalShardFallback()

    def _all_finite(self, loss: Optional[Tensor]) -> bool:
        """One fused check of the loss and every gradient (a single host synchronisation).

        With a process group the verdict is global (one small all-reduce): a NaN in one rank's gradient
        shard or loss makes every rank refuse or skip the step, so the ranks never disagree on whether
        to enter the step's collectives.
        """
        # Everything stays on the parameters' device until the one .item() at the end: each .cpu() of
        # a device tensor would be a host synchronisation of its own.
        device, _ = self.scalar_device_dtype()
        maxima: list[Tensor] = [torch.zeros(1, device=device)]
        if loss is not None:
            maxima.append(loss.abs().to(device=device, dtype=torch.float32).reshape(1))
        for group in self.param_groups:
            # Empty local shards (FSDP2 gives a rank nothing of a small tensor) have no inf-norm.
            grads = [g for g in (local_tensor(p.grad) for p in group["params"] if p.grad is not None) if g.numel()]
            if grads:
                # The max-abs norm propagates NaN and is Inf exactly when an entry is.
                norms = torch._foreach_norm(grads, math.inf)
                maxima.append(torch.stack([n.to(device) for n in norms]).to(torch.float32).max().reshape(1))
        bad = (~torch.isfinite(torch.cat(maxima))).any().to(torch.float32).reshape(1)
        group = self._reduction_group()
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
        return not bool(bad.item())

    # ------------------------------------------------------------------ multi-tensor grouping
    def buckets(self, group: dict[str, Any]) -> list[Bucket]:
        """The params of ``group`` that have a gradient, grouped by (device, dtype), state created lazily."""
        by_key: dict[tuple[torch.device, torch.dtype, bool], Bucket] = {}
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[param]
            if not state:
                state.update(self.init_param_state(param, grad, group))
            # DTensors and plain tensors never share a foreach list (DTensor ops refuse mixed lists).
            bucket = by_key.setdefault((param.device, param.dtype, is_dtensor(param)), Bucket(group))
            bucket.params.append(param)
            bucket.grads.append(grad)
            for key, value in state.items():
                bucket.state.setdefault(key, []).append(value)
        return list(by_key.values())

    def all_buckets(self) -> list[Bucket]:
        """The buckets of every param group, in group order."""
        buckets = []
        for index, group in enumerate(self.param_groups):
            for bucket in self.buckets(group):
                bucket.group_index = index
                buckets.append(bucket)
        return buckets

    # ------------------------------------------------------------------ blocked execution
    def blocks(
        self, lists: Sequence[Sequence[Tensor]], scratch: Sequence[Optional[torch.dtype]] = ()
    ) -> Iterator[tuple[list[list[Tensor]], list[list[Tensor]]]]:
        """Iterate over :func:`cache_blocks` of ``lists`` with temporaries for each block.

        Yields ``(block, temporaries)``: ``temporaries[j]`` is a list of uninitialised tensors shaped like
        ``block[0]``, of dtype ``scratch[j]`` (None: the dtype of ``block[0]``). Kernels write their
        intermediate results into them with in-place ops instead of creating fresh tensors.

        On the CPU block path they are views into one persistent flat buffer per (device, dtype, slot),
        reused by every block and every step: a fresh CPU allocation page-faults on first touch, a reused
        block-sized buffer is already in cache. Without blocking (accelerators, ``torch.compile``) they are
        fresh ``empty_like`` tensors (the caching allocator makes those cheap).
        """
        if not lists or not lists[0]:
            return
        max_numel = block_numel(lists[0][0].device)
        for block in cache_blocks(lists, max_numel):
            lead = block[0]
            if max_numel is None:
                temporaries = [[torch.empty_like(t, dtype=dtype) for t in lead] for dtype in scratch]
            else:
                temporaries = [
                    self._scratch_views(lead, dtype or lead[0].dtype, slot) for slot, dtype in enumerate(scratch)
                ]
            yield block, temporaries

    def _scratch_views(self, like: list[Tensor], dtype: torch.dtype, slot: int) -> list[Tensor]:
        """Contiguous views shaped like ``like`` into the persistent buffer ``(device, dtype, slot)``."""
        total = sum(t.numel() for t in like)
        key = (like[0].device, dtype, slot)
        scratch = self.__dict__.setdefault("_scratch", {})  # absent after unpickling (Optimizer.__setstate__)
        buffer = scratch.get(key)
        if buffer is None or buffer.numel() < total:
            buffer = torch.empty(max(total, CPU_BLOCK_NUMEL), device=like[0].device, dtype=dtype)
            scratch[key] = buffer
        views, offset = [], 0
        for t in like:
            views.append(buffer[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()
        return views

    # ------------------------------------------------------------------ global scalars
    def scalar_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Where the global scalars live: the first parameter's device, in fp64 for fp64 models else fp32."""
        first = self.param_groups[0]["params"][0]
        dtypes = {p.dtype for g in self.param_groups for p in g["params"]}
        dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        return first.device, dtype

    def publish_stats(self, **values: Tensor) -> None:
        """Replace :attr:`stats` with ``values`` (0-dim tensors). The dict object itself is kept: a
        compiled step may mutate it, while torch.compile (2.11) cannot trace a new attribute value."""
        self.stats.clear()
        self.stats.update(values)

    def global_scalar(self, key: str, initial: float) -> Tensor:
        """The global scalar ``key`` of the state, created as ``initial`` on first use."""
        if key not in self.global_state:
            device, dtype = self.scalar_device_dtype()
            self.global_state[key] = torch.full((), initial, device=device, dtype=dtype)
        return self.global_state[key]

    def _reduction_group(self) -> Any:
        if isinstance(self.process_group, str):
            if self.process_group == "none" or not (dist.is_available() and dist.is_initialized()):
                return None
            return dist.group.WORLD
        return self.process_group

    def reduce(self, partial_sums: Sequence[Tensor], loss: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Turn this process's partial sums into global sums, and its loss into the global mean loss.

        Everything travels in ONE all-reduce. Sums over *sharded* parameters (DTensor shards, FSDP2) are
        added across ranks; sums over *replicated* parameters (DDP) are already global, so only rank 0
        contributes them (exact, no rounding). The loss is averaged across ranks, as DDP averages
        gradients, so every rank computes the same adaptive step. Without a process group this is a
        stack of the local values.

        Returns:
            (a 1-D tensor of the global sums, the global mean loss or None).
        """
        device, dtype = self.scalar_device_dtype()
        values = [s.to(device=device, dtype=dtype).reshape(()) for s in partial_sums]
        if loss is not None:
            values.append(loss.to(device=device, dtype=dtype).reshape(()))
        packed = torch.stack(values) if values else torch.zeros(0, device=device, dtype=dtype)
        group = self._reduction_group()
        if group is not None:
            world = dist.get_world_size(group)
            if world > 1:
                n_sums = len(partial_sums)
                layouts = {layout(p) for g in self.param_groups for p in g["params"]}
                if len(layouts) > 1 or "mixed" in layouts:
                    # Summing would count replicated parts once per rank: refuse rather than be wrong.
                    raise NotImplementedError(
                        f"{type(self).__name__}: global sums need every parameter either sharded over the "
                        f"process group (FSDP2: DTensors with only Shard placements) or replicated on every "
                        f"rank (DDP: plain tensors); got a mix ({', '.join(sorted(layouts))}), e.g. FSDP2 "
                        f"applied to part of the model, a 2-D (HSDP) mesh or replicated tensor-parallel "
                        f"DTensors. This layout is not supported yet."
                    )
                # ZeRO partitions: each plain tensor lives on one rank only, so its sums add up like shards.
                sharded = layouts == {"sharded"} or self.params_partitioned
                weights = torch.ones_like(packed)
                if not sharded and dist.get_rank(group) != 0:
                    weights[:n_sums] = 0.0
                if loss is not None:
                    weights[n_sums] = 1.0 / world
                packed = packed * weights
                dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        if loss is None:
            return packed, None
        return packed[:-1], packed[-1]

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        # The global scalars travel inside param_groups[0], where torch.distributed.checkpoint keeps them.
        return checkpoint.add_global_state(super().state_dict(), self.global_state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by ``state_dict()``; a corrupt or mismatched one raises ``ValueError``."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: not an optimizer state_dict (missing 'state'/'param_groups')")
        state_dict, global_state = checkpoint.split_global_state(name, state_dict)
        if global_state is None and state_dict["state"]:
            raise ValueError(
                f"{name}.load_state_dict: the state_dict has per-parameter state but no "
                f"{checkpoint.GLOBAL_KEY!r}; "
                f"it was not saved by a tunefree optimizer"
            )
        previous = (self.state, self.param_groups)
        super().load_state_dict(state_dict)
        try:
            self._check_loaded_state()
        except ValueError:
            self.state, self.param_groups = previous
            raise
        checkpoint.ensure_global_state_key(self)
        # torch leaves "step" entries on the device they were saved from (its own counters live on the
        # CPU); tunefree's counters live beside their parameter, so a checkpoint can change devices.
        for param, state in self.state.items():
            step = state.get("step")
            if isinstance(step, Tensor) and isinstance(param, Tensor) and step.device != param.device:
                state["step"] = step.to(param.device)
        device, dtype = self.scalar_device_dtype()
        self.global_state = {
            key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
            for key, value in (global_state or {}).items()
        }

    def _check_loaded_state(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param)
                if not state:
                    continue
                for key, value in state.items():
                    if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: state {key!r} has shape "
                            f"{tuple(value.shape)} but its parameter has shape {tuple(param.shape)}"
                        )
