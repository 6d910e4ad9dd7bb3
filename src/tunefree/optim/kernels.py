"""Multi-tensor kernels: the ``torch._foreach_*`` building blocks every tunefree optimizer's math runs on.

Two execution paths share these functions. On the eager CPU path, ops run tensor by tensor inside
cache-sized blocks (:func:`cache_blocks`), so a kernel's passes stay in cache; on a GPU and under
``torch.compile`` one multi-tensor launch per op is cheaper (:func:`per_tensor_kernels` decides). All
functions act on the process-local parts of DTensors (FSDP2 shards).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "CPU_BLOCK_NUMEL",
    "FLAT_CHUNK_NUMEL",
    "as_real",
    "block_numel",
    "cache_blocks",
    "divide_into_",
    "dot",
    "finite_screen",
    "entries_finite",
    "local_tensor",
    "per_tensor_kernels",
    "sub_scaled_",
    "sum_of_dots",
]

#: Elements per block of the CPU fast path (see :func:`cache_blocks`): ~1 MiB per fp32 list, so that the
#: five or six lists an elementwise kernel touches stay in L2/L3 cache across its passes.
CPU_BLOCK_NUMEL = 1 << 18


def local_tensor(tensor: Tensor) -> Tensor:
    """The process-local part of ``tensor`` (a DTensor's shard; a plain tensor itself)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def as_real(tensor: Tensor) -> Tensor:
    """``torch.view_as_real`` of a complex tensor (a view: in-place ops write through), else the tensor:
    kernels see a complex parameter as its real view, as ``torch.optim`` does."""
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def dot(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """Inner product of the local parts of ``a`` and ``b``, accumulated in ``dtype`` (at least fp32).

    Low-precision tensors are upcast first: a bf16 dot product would round the partial sums that the
    adaptive step sizes depend on.
    """
    a, b = local_tensor(a), local_tensor(b)
    if a.dtype != dtype:
        a, b = a.to(dtype), b.to(dtype)
    return torch.dot(a.reshape(-1), b.reshape(-1))


#: Elements per concatenated chunk of :func:`sum_of_dots` off the CPU block path (64 MiB per fp32 list).
FLAT_CHUNK_NUMEL = 1 << 24


def per_tensor_kernels(device: torch.device) -> bool:
    """Whether ops may run tensor by tensor on ``device``: true on the eager CPU path, whose blocks are
    cache-sized, and false on a GPU or under ``torch.compile``, where one launch per tensor costs more
    than the arithmetic (a ResNet-18 has 62 tensors; each launch is several microseconds)."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


def sum_of_dots(a: Sequence[Tensor], b: Optional[Sequence[Tensor]], dtype: torch.dtype) -> Tensor:
    """``sum_i <a_i, b_i>`` over the local parts, accumulated in ``dtype`` (0-dim); ``b=None``: ``sum_i ||a_i||^2``.

    On the CPU block path one dot per tensor. Elsewhere the tensors are flattened into chunks of about
    :data:`FLAT_CHUNK_NUMEL` elements and each chunk is one dot: a copy of the chunk costs far less on a
    GPU than a kernel launch per tensor. A squared norm concatenates once.
    """
    if not a:
        raise ValueError("sum_of_dots: empty tensor lists")
    a, b_list = [local_tensor(t) for t in a], (None if b is None else [local_tensor(t) for t in b])
    if per_tensor_kernels(a[0].device):
        pairs = zip(a, b_list if b_list is not None else a)
        return torch.stack([dot(x, y, dtype) for x, y in pairs]).sum()

    def flat(tensors: list[Tensor]) -> Tensor:
        joined = tensors[0].reshape(-1) if len(tensors) == 1 else torch.cat([t.reshape(-1) for t in tensors])
        return joined if joined.dtype == dtype else joined.to(dtype)

    partials: list[Tensor] = []
    start, filled = 0, 0
    for i, tensor in enumerate(a):
        filled += tensor.numel()
        if filled >= FLAT_CHUNK_NUMEL or i == len(a) - 1:
            left = flat(a[start:i + 1])
            right = left if b_list is None else flat(b_list[start:i + 1])
            partials.append(torch.dot(left, right))
            start, filled = i + 1, 0
    return partials[0] if len(partials) == 1 else torch.stack(partials).sum()


def finite_screen(tensors: Sequence[Tensor]) -> tuple[Tensor, bool]:
    """A one-read screen for NaN/Inf in ``tensors`` (non-empty, on one device): ``(suspect, exact)``,
    ``suspect`` a 0-dim bool tensor on that device that is False when every entry is finite.

    (On the CPU, fp32 and fp64 gradients are checked by the native kernels instead when they are available:
    :func:`tunefree.optim.native.split_nonfinite`.) On the CPU block path it looks at each tensor's sum (a
    vectorised reduction at memory bandwidth, no temporary; low-precision sums accumulate in fp32). NaN and
    Inf propagate through any order of additions (``inf - inf`` is NaN) and overflow only turns a finite sum
    into Inf, so a finite sum proves its tensor finite; a non-finite one may be an overflow of finite entries
    (sums beyond ~3e38), hence ``exact=False``: a suspect screen must be confirmed with :func:`entries_finite`.

    Elsewhere it looks at the foreach max-abs norms (one launch; exact, ``exact=True``). The CPU kernel of
    that norm reads far below memory bandwidth (0.7 GB/s against ~25 GB/s for a sum, measured on two
    cores), which is why the CPU path does not use it.
    """
    tensors = [local_tensor(t) for t in tensors]
    exact = not per_tensor_kernels(tensors[0].device)
    if exact:
        values = list(torch._foreach_norm(tensors, float("inf")))
    else:
        values = [t.sum() if t.dtype in (torch.float32, torch.float64) else t.sum(dtype=torch.float32)
                  for t in tensors]
    # one stack per dtype: casting an fp64 value to fp32 could overflow a finite one
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for value in values:
        by_dtype.setdefault(value.dtype, []).append(value)
    suspects = [(~torch.isfinite(torch.stack(group))).any() for group in by_dtype.values()]
    return (suspects[0] if len(suspects) == 1 else torch.stack(suspects).any()), exact


def entries_finite(tensors: Sequence[Tensor]) -> Tensor:
    """Whether every entry of ``tensors`` is finite (a 0-dim bool tensor; exact, but an ``isfinite`` mask per
    tensor: used only to confirm a non-finite :func:`finite_screen`)."""
    return torch.stack([torch.isfinite(local_tensor(t)).all().to(tensors[0].device) for t in tensors]).all()


def divide_into_(numerators: Sequence[Tensor], denominators: Sequence[Tensor]) -> None:
    """``denominators[i] <- numerators[i] / denominators[i]`` in place (IEEE division, no reciprocal).

    torch has no in-place foreach op for this direction: on the CPU block path one ``div(out=)`` per
    tensor, elsewhere one foreach division into temporaries and one foreach copy back."""
    if per_tensor_kernels(denominators[0].device):
        for numerator, denominator in zip(numerators, denominators):
            torch.div(numerator, denominator, out=denominator)
    else:
        torch._foreach_copy_(denominators, torch._foreach_div(numerators, denominators))


def sub_scaled_(params: Sequence[Tensor], direction: Sequence[Tensor], scale: Tensor) -> None:
    """``params[i] -= scale * direction[i]`` for a 0-dim tensor ``scale`` on the parameters' device.

    A list of 0-dim tensors takes torch's per-tensor slow path on a GPU, so off the CPU block path the
    product goes through the single-tensor foreach overload; both round ``scale * d`` once, then subtract.
    """
    if per_tensor_kernels(params[0].device):
        torch._foreach_addcmul_(params, direction, [scale] * len(direction), value=-1)
    else:
        torch._foreach_sub_(params, torch._foreach_mul(direction, scale))


def cache_blocks(lists: Sequence[Sequence[Tensor]], max_numel: Optional[int]) -> list[list[list[Tensor]]]:
    """Cut aligned tensor lists into blocks of at most ``max_numel`` elements each.

    ``lists[k][i]`` belongs to tensor ``i``; entries with the shape of ``lists[0][i]`` are cut into flat
    slices (views, so in-place ops write through), other entries (per-tensor 0-dim scalars) are repeated
    for every slice. A kernel that runs its ``_foreach_*`` passes block by block reads and writes main
    memory about once per list instead of once per pass: on CPU each pass over a tensor larger than the
    cache costs a full trip to memory, and each temporary a fresh page-faulting allocation.

    ``max_numel=None`` returns one block holding the lists unchanged (GPU, ``torch.compile``).
    """
    if max_numel is None:
        return [[list(tensors) for tensors in lists]]
    blocks: list[list[list[Tensor]]] = []
    current: list[list[Tensor]] = [[] for _ in lists]
    filled = 0
    for i in range(len(lists[0])):
        # DTensors (FSDP2) are cut as their local shards: slicing a sharded DTensor would redistribute it
        # into a copy, and in-place ops on that copy would never reach the parameter or its state.
        entries = [local_tensor(tensors[i]) for tensors in lists]
        lead = entries[0]
        sliced = [e.shape == lead.shape for e in entries]
        numel = lead.numel()
        splittable = numel > max_numel and all(e.is_contiguous() for e, s in zip(entries, sliced) if s)
        flat = [e.view(-1) if s else e for e, s in zip(entries, sliced)] if splittable else entries
        start = 0
        while start < numel:
            stop = min(numel, start + max_numel) if splittable else numel
            for k, (e, s) in enumerate(zip(flat, sliced)):
                current[k].append(e[start:stop] if (s and splittable) else e)
            filled += stop - start
            start = stop
            if filled >= max_numel:
                blocks.append(current)
                current, filled = [[] for _ in lists], 0
    if current[0]:
        blocks.append(current)
    return blocks


def block_numel(device: torch.device) -> Optional[int]:
    """Block size for :func:`cache_blocks` on ``device``: :data:`CPU_BLOCK_NUMEL` for eager CPU steps,
    None (no blocking: one multi-tensor launch per op is best there) on accelerators and when compiling."""
    return CPU_BLOCK_NUMEL if per_tensor_kernels(device) else None
