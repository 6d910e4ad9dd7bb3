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
* **observability**: :attr:`TunefreeOptimizer.stats` holds the method's adaptive quantities as 0-dim tensors
  (first param group), :attr:`TunefreeOptimizer.group_stats` those of every param group;
* **a NaN/Inf policy**: a non-finite loss or gradient never reaches parameters or state;
* **torch's optimizer contract** (docs/contract.md): a step without gradients is a no-op, complex
  parameters behave as their ``torch.view_as_real``, ``deepcopy``/``pickle`` keep everything ``step()``
  needs, hooks see the whole state, and ``load_state_dict`` refuses a foreign, truncated or non-finite
  state with the optimizer left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Literal, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

from tunefree.optim import checkpoint, native
from tunefree.optim._dtensor import LocalShardFallback, is_dtensor, layout
from tunefree.optim.elementwise import new_step_counter
from tunefree.optim.kernels import (
    CPU_BLOCK_NUMEL,
    as_real,
    block_numel,
    cache_blocks,
    entries_finite,
    finite_screen,
    local_tensor,
)
from tunefree.optim.validation import check_range
from tunefree.optim.zero_redundancy import enclosing_zero_redundancy_optimizer

__all__ = ["Bucket", "Closure", "LossLike", "NonFiniteError", "TunefreeOptimizer"]

NonFinitePolicy = Literal["raise", "skip", "off"]
LossLike = Union[Tensor, float]
Closure = Callable[[], LossLike]


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN/Inf; the step was refused and nothing was changed."""


# Key under which the global scalar state travels inside ``state_dict()``.
_GLOBAL_KEY = checkpoint.GLOBAL_KEY


@dataclass
class Bucket:
    """The tensors of one param group that share a device and dtype, with their state aligned.

    ``state[key][i]`` is the state tensor ``key`` of ``params[i]``. A complex parameter enters as its
    ``torch.view_as_real`` (``params``, ``grads`` and its complex state entries alike), so every kernel
    sees real tensors and a complex parameter behaves exactly as its real view, as in ``torch.optim``;
    ``sources[i]`` is the parameter itself (the key of ``optimizer.state`` and of ``p.grad``).
    """

    group: dict[str, Any]
    #: position of ``group`` in ``param_groups`` (set by :meth:`TunefreeOptimizer.all_buckets`)
    group_index: int = 0
    params: list[Tensor] = field(default_factory=list)
    sources: list[Tensor] = field(default_factory=list)
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
            ``stats["skipped_steps"]``). Both read each gradient once more and cost one host
            synchronisation per step (a second one only to confirm a refusal). ``"off"``: no check,
            no synchronisation, as in ``torch.optim`` (use it under ``GradScaler``, which checks gradients
            itself, or in a ``torch.compile``-d step; compiled steps never run the check).
        process_group: group over which global quantities are reduced. ``"auto"`` (default): the default
            group when ``torch.distributed`` is initialised, else none. ``"none"``: never reduce (each
            process optimises on its own). Or an explicit ``ProcessGroup``.
    """

    needs_loss: ClassVar[bool] = False
    #: old names of param-group keys -> current names (old checkpoints and groups still load)
    legacy_group_keys: ClassVar[dict[str, str]] = {}
    #: param-group keys that checkpoints of older versions may lack (taken from this optimizer's group on load)
    optional_group_keys: ClassVar[frozenset[str]] = frozenset()
    #: hyperparameters added after a release, with the value every older checkpoint ran with: a saved group
    #: without the key loads with this value, so that it resumes with the math it was trained with
    legacy_group_values: ClassVar[dict[str, Any]] = {}
    #: global scalars that may legitimately be +-inf (all others must be finite in a loaded state)
    infinite_global_keys: ClassVar[frozenset[str]] = frozenset()

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
        #: one dict of 0-dim tensors per param group (same order), e.g. MoMo's ``tau`` and its cap
        self.group_stats: list[dict[str, Tensor]] = []
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
        when they are invalid). Empty groups are allowed anywhere, as in ``torch.optim``.

        A tensor ``lr`` is accepted and stored as a Python float: tunefree reads ``lr`` on the host, and a
        float keeps ``step()`` free of device synchronisation (a later in-place change of the tensor passed
        in is not seen; schedulers write the group's value and work as usual).
        """
        if isinstance(param_group, dict):
            param_group = self._with_current_keys(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if isinstance(group.get("lr"), Tensor):
                group["lr"] = check_range(type(self).__name__, "lr", group["lr"], finite=False)
            self.validate_group(group)
        except ValueError:
            self.param_groups.pop()
            raise

    def _with_current_keys(self, group: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``group`` with old hyperparameter names (:attr:`legacy_group_keys`) renamed."""
        renamed = dict(group)
        for old, new in self.legacy_group_keys.items():
            if old in renamed:
                if new in renamed:
                    raise ValueError(
                        f"{type(self).__name__}: a param group sets both {old!r} and {new!r}, which name the same "
                        f"hyperparameter ({old!r} is its old name); keep only {new!r}"
                    )
                renamed[new] = renamed.pop(old)
        return renamed

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
        if not self._has_gradients():
            return returned  # torch's contract: no gradient anywhere, no change anywhere (counters included)

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

    def _has_gradients(self) -> bool:
        """Whether any parameter has a gradient; a sparse gradient raises (before the NaN/Inf check, whose
        norms do not exist for sparse tensors, so the message is the same under every ``nonfinite``)."""
        found = False
        for group in self.param_groups:
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.layout != torch.strided:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients (a parameter of shape "
                        f"{tuple(param.shape)} has a {grad.layout} gradient); use dense gradients (e.g. "
                        f"nn.Embedding(..., sparse=False)) or torch.optim.SparseAdam for that parameter"
                    )
                found = True
        return found

    def _dtensor_fallback(self) -> Any:
        """Foreach ops that DTensor cannot shard run on local shards (see :class:`LocalShardFallback`)."""
        if torch.compiler.is_compiling() or not any(
            is_dtensor(p) for group in self.param_groups for p in group["params"]
        ):
            return contextlib.nullcontext()
        return LocalShardFallback()

    def _all_finite(self, loss: Optional[Tensor]) -> bool:
        """Whether the loss and every gradient are finite: one read of each gradient, one host
        synchronisation (the verdict).

        On the CPU, fp32/fp64 gradients go through the native check (exact, at read bandwidth:
        :func:`~tunefree.optim.native.split_nonfinite`); the others through
        :func:`~tunefree.optim.kernels.finite_screen` (on CPU a sum per tensor, at memory bandwidth). A
        CPU sum can also flag finite gradients whose sum overflows; only then (a refused step, or
        gradients beyond ~1e38) an exact ``isfinite`` pass confirms those tensors, at a second
        synchronisation. With a process group the verdict is global (one small all-reduce): a NaN in one
        rank's gradient shard or loss makes every rank refuse or skip the step, so the ranks never
        disagree on whether to enter the step's collectives.
        """
        # Everything stays on the parameters' device until the .item(): each .cpu() of a device tensor
        # would be a host synchronisation of its own.
        device, _ = self.scalar_device_dtype()
        by_device: dict[torch.device, list[Tensor]] = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    grad = as_real(local_tensor(param.grad))  # complex: its real view
                    # Empty local shards (FSDP2 gives a rank nothing of a small tensor) have nothing to check.
                    if grad.numel():
                        by_device.setdefault(grad.device, []).append(grad)
        known_bad = [] if loss is None else [(~torch.isfinite(loss.to(device))).reshape(1)]
        screens = []
        for grads in by_device.values():
            found, rest = native.split_nonfinite(grads)
            if found:
                known_bad.append(torch.ones(1, dtype=torch.bool, device=device))
            if rest:
                screens.append((*finite_screen(rest), rest))
        bad = known_bad + [suspect.to(device).reshape(1) for suspect, _, _ in screens]
        if not self._any_rank(bad):
            return True
        if all(exact for _, exact, _ in screens):
            return False
        # Every rank gets here together (the verdict above is global), so the collectives stay matched.
        # (The loss and a native finding are exact; only the screened tensors need confirming.)
        confirmed = known_bad + [(~entries_finite(rest)).to(device).reshape(1) for _, _, rest in screens]
        return not self._any_rank(confirmed)

    def _any_rank(self, flags: list[Tensor]) -> bool:
        """Whether any of the 1-element bool ``flags`` is set on any rank of the reduction group."""
        device, _ = self.scalar_device_dtype()
        bad = torch.cat([torch.zeros(1, dtype=torch.bool, device=device), *flags]).any().to(torch.float32).reshape(1)
        group = self._reduction_group()
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
        return bool(bad.item())

    # ------------------------------------------------------------------ multi-tensor grouping
    def buckets(self, group: dict[str, Any]) -> list[Bucket]:
        """The params of ``group`` that have a gradient, grouped by (device, dtype), state created lazily."""
        by_key: dict[tuple[torch.device, torch.dtype, bool], Bucket] = {}
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            state = self.state[param]
            if not state:
                state.update(self.init_param_state(param, grad, group))
            real = as_real(param)
            # DTensors and plain tensors never share a foreach list (DTensor ops refuse mixed lists).
            bucket = by_key.setdefault((param.device, real.dtype, is_dtensor(param)), Bucket(group))
            bucket.sources.append(param)
            bucket.params.append(real)
            bucket.grads.append(as_real(grad))
            for key, value in state.items():
                bucket.state.setdefault(key, []).append(as_real(value))
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
        """Where the global scalars live: the first parameter's device, in fp64 for fp64 (or complex128)
        models else fp32. Empty param groups are skipped; an optimizer without parameters uses the CPU."""
        params = [p for g in self.param_groups for p in g["params"]]
        if not params:
            return torch.device("cpu"), torch.float32
        dtypes = {p.dtype.to_real() if p.is_complex() else p.dtype for p in params}
        dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        return params[0].device, dtype

    def publish_stats(self, groups: Optional[Sequence[dict[str, Tensor]]] = None, **values: Tensor) -> None:
        """Replace :attr:`stats` with ``values`` and :attr:`group_stats` with ``groups`` (one dict per param
        group; all 0-dim tensors). The dict and list objects themselves are kept: a compiled step may
        mutate them, while torch.compile (2.11) cannot trace a new attribute value."""
        self.stats.clear()
        self.stats.update(values)
        if groups is not None:
            per_group = self.__dict__.setdefault("group_stats", [])  # absent after unpickling an old optimizer
            del per_group[len(groups):]
            for index, group_values in enumerate(groups):
                if index == len(per_group):
                    per_group.append({})
                per_group[index].clear()
                per_group[index].update(group_values)

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

    # ------------------------------------------------------------------ copies and pickling
    def _portable_state(self, keep_process_group: bool) -> dict[str, Any]:
        """``__dict__`` without what cannot or need not travel: hooks (torch drops them too) and the CPU
        path's scratch buffers (rebuilt on demand). ``global_state``, ``stats``, the NaN/Inf policy, an
        observed loss and a subclass's attributes all stay."""
        state = {
            key: value for key, value in self.__dict__.items()
            if not key.startswith("_optimizer_") and key != "_scratch"
        }
        if not keep_process_group and not isinstance(self.process_group, str):
            warnings.warn(
                f"{type(self).__name__}: an explicit process group cannot be pickled; the unpickled optimizer "
                f"uses process_group='auto' (the default group once torch.distributed is initialised). Set "
                f"optimizer.process_group again after unpickling if that is not the group you want.",
                stacklevel=3,
            )
            state["process_group"] = "auto"
        return state

    def __getstate__(self) -> dict[str, Any]:
        """Everything ``step()`` needs (torch's own ``Optimizer.__getstate__`` keeps only ``defaults``,
        ``state`` and ``param_groups``). An explicit ``ProcessGroup`` cannot be pickled: it becomes
        ``"auto"``, with a warning; :meth:`__deepcopy__` keeps it (shared, not copied)."""
        return self._portable_state(keep_process_group=False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict also calls this, with only "state" and "param_groups": keep the rest.
        super().__setstate__(state)
        defaults: dict[str, Any] = dict(
            nonfinite="raise", process_group="auto", global_state={}, stats={}, _observed_loss=None, _scratch={}
        )
        for key, value in defaults.items():
            self.__dict__.setdefault(key, value)

    def __deepcopy__(self, memo: dict[int, Any]) -> "TunefreeOptimizer":
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        if not isinstance(self.process_group, str):
            memo[id(self.process_group)] = self.process_group  # a communicator is shared, never copied
        copied.__setstate__(copy.deepcopy(self._portable_state(keep_process_group=True), memo))
        return copied

    @contextlib.contextmanager
    def _hooks_suspended(self, *names: str) -> Iterator[None]:
        """Run torch's ``state_dict``/``load_state_dict`` without the hooks ``names``: tunefree runs them
        itself, once its own part (the global scalars) is in place."""
        saved = {name: self.__dict__[name] for name in names}
        try:
            for name in names:
                self.__dict__[name] = OrderedDict()
            yield
        finally:
            self.__dict__.update(saved)

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict plus the global scalars; post hooks see (and may change) the whole of it.

        The global scalars are stored twice: as tensors under the top-level key (what a plain
        ``load_state_dict`` reads first) and as a JSON copy in ``param_groups[0]``, the only place
        ``torch.distributed.checkpoint``'s flattened format keeps.
        """
        with self._hooks_suspended("_optimizer_state_dict_post_hooks"):
            state = super().state_dict()
        state[_GLOBAL_KEY] = {key: value.clone() for key, value in self.global_state.items()}
        checkpoint.add_global_state(state, self.global_state)
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state)
            if result is not None:
                state = result
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by ``state_dict()``.

        The whole state_dict is checked before anything changes; a foreign, truncated, malformed or
        non-finite one raises ``ValueError`` saying what is wrong, and the optimizer stays as it was.
        Load pre hooks run first (on a shallow copy, as in torch), post hooks last, after the global
        scalars are restored. Old checkpoints load: renamed group keys are mapped, a Python-number
        ``step`` becomes a tensor counter.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: not an optimizer state_dict (missing 'state'/'param_groups')")
        state_dict, global_state = checkpoint.split_global_state(name, state_dict)
        state_dict["param_groups"] = self._checked_groups(state_dict["param_groups"])
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError(f"{name}.load_state_dict: 'state' must be a dict, got {type(saved_state).__name__}")
        has_param_state = self._check_param_state(saved_state, state_dict["param_groups"])
        if global_state is None:
            if has_param_state:
                raise ValueError(
                    f"{name}.load_state_dict: the state_dict has per-parameter state but no {_GLOBAL_KEY!r}; "
                    f"it was not saved by a tunefree optimizer"
                )
            global_state = {}
        self._check_global_state(global_state)

        with self._hooks_suspended("_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"):
            super().load_state_dict(state_dict)
        checkpoint.ensure_global_state_key(self)
        for param, state in self.state.items():
            if not (isinstance(param, Tensor) and isinstance(state, dict)):
                continue  # entries of hooks or other tools, kept as torch keeps them
            step = state.get("step")
            if isinstance(step, numbers.Real):
                state["step"] = new_step_counter(param).fill_(float(step))
            elif isinstance(step, Tensor) and step.device != param.device:
                # torch leaves "step" on the device it was saved from (its own counters live on the CPU);
                # tunefree's counters live beside their parameter, so a checkpoint can change devices.
                state["step"] = step.to(param.device)
        device, dtype = self.scalar_device_dtype()
        restored = {}
        for key, value in global_state.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(float(value), dtype=torch.float64)
            restored[key] = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        self.global_state = restored
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _checked_groups(self, saved_groups: Any) -> list[dict[str, Any]]:
        """Copies of the saved param groups with current key names, checked against this optimizer's."""
        name = type(self).__name__
        if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, dict) for g in saved_groups):
            raise ValueError(f"{name}.load_state_dict: 'param_groups' must be a list of dicts")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state_dict has {len(saved_groups)} param groups, this optimizer "
                f"{len(self.param_groups)}"
            )
        groups = []
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved = self._with_current_keys(saved)
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: param group {index} has {len(saved.get('params', ()))} parameters "
                    f"in the state_dict and {len(group['params'])} here"
                )
            for key, value in self.legacy_group_values.items():
                saved.setdefault(key, value)  # a checkpoint from before the option ran with this value
            for key in self.optional_group_keys:
                if key in group:
                    saved.setdefault(key, group[key])
            # ("differentiable" is torch's: its __setstate__ adds it to the defaults)
            missing = sorted(key for key in self.defaults if key not in saved and key != "differentiable")
            if missing:
                raise ValueError(
                    f"{name}.load_state_dict: param group {index} lacks {missing}: the state_dict was saved by "
                    f"another optimizer (its hyperparameters are {sorted(k for k in saved if k != 'params')})"
                )
            for key, value in saved.items():
                if isinstance(value, float) and math.isnan(value):
                    raise ValueError(f"{name}.load_state_dict: param group {index} has {key}=nan")
            groups.append(saved)
        return groups

    def _check_param_state(self, saved_state: dict[Any, Any], saved_groups: list[dict[str, Any]]) -> bool:
        """Check every saved per-parameter entry against what :meth:`init_param_state` creates for its
        parameter (computed on the meta device: no memory); returns whether any entry is non-empty."""
        name = type(self).__name__
        owners = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for saved_id, param in zip(saved["params"], group["params"]):
                owners[saved_id] = (param, saved)
        found = False
        for saved_id, entry in saved_state.items():
            if saved_id not in owners:
                continue  # not a parameter's entry (hooks may store their own), kept as torch does
            where = f"{name}.load_state_dict: the state of parameter {saved_id}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be a dict of tensors, got {type(entry).__name__}")
            if not entry:
                continue
            found = True
            param, group = owners[saved_id]
            expected = self._expected_param_state(param, group)
            if expected is not None:
                missing, extra = sorted(expected.keys() - entry.keys()), sorted(entry.keys() - expected.keys())
                if missing or extra:
                    raise ValueError(
                        f"{where} has entries {sorted(entry)}, expected {sorted(expected)}: it is truncated or was "
                        f"saved by another optimizer"
                    )
            for key, value in entry.items():
                if key == "step" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                    value = torch.tensor(float(value))
                if not isinstance(value, Tensor):
                    raise ValueError(f"{where}: {key!r} must be a tensor, got {type(value).__name__} ({value!r:.40})")
                shape = expected[key].shape if expected is not None else (param.shape if value.dim() else ())
                if value.shape != shape:
                    raise ValueError(
                        f"{where}: state {key!r} has shape {tuple(value.shape)} but should have shape {tuple(shape)} "
                        f"(its parameter has shape {tuple(param.shape)})"
                    )
                local = local_tensor(value)  # a DTensor's shard: no collective for the check
                if (local.is_floating_point() or local.is_complex()) and not bool(torch.isfinite(local).all()):
                    raise ValueError(f"{where}: state {key!r} holds non-finite values (NaN/Inf); refusing to load it")
        return found

    def _expected_param_state(self, param: Tensor, group: dict[str, Any]) -> Optional[dict[str, Tensor]]:
        """The state :meth:`init_param_state` would create for ``param`` under ``group``, as meta tensors
        (None where a subclass's initialisation cannot run on the meta device)."""
        meta = torch.empty(param.shape, dtype=param.dtype, device="meta")
        try:
            return self.init_param_state(meta, meta, group)
        except Exception:  # noqa: BLE001 - only a best-effort template; the other checks still run
            return None

    def _check_global_state(self, global_state: Any) -> None:
        name = type(self).__name__
        if not isinstance(global_state, dict):
            raise ValueError(
                f"{name}.load_state_dict: {_GLOBAL_KEY!r} must be a dict, got {type(global_state).__name__}"
            )
        for key, value in global_state.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = torch.tensor(float(value))
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError(f"{name}.load_state_dict: global state {key!r} must be a scalar, got {value!r:.40}")
            if value.is_floating_point():
                bad = bool(torch.isnan(value).any()) or (
                    key not in self.infinite_global_keys and bool(torch.isinf(value).any())
                )
                if bad:
                    raise ValueError(
                        f"{name}.load_state_dict: global state {key!r} is {float(value)}; refusing to load it"
                    )

