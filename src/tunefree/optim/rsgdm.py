r"""RSGDM: SGD-momentum rectified by a differential term (Yuan & Hu, CSA 2021; Qin et al., arXiv 2409.15314).

The momentum (an EMA of gradients) lags a drifting gradient; RSGDM adds ``beta`` times an EMA of the
stepwise gradient differences ``g_t - g_{t-1}`` (the trend) to it. With equal factors and zero
initialisation the two EMAs merge into one (exact by linearity):

.. math::

    n_t = \beta n_{t-1} + (1-\beta)\big((1+\beta) g_t - \beta g_{t-1}\big), \qquad
    x_{t+1} = x_t - \eta\, n_t ,

i.e. SGD whose EMA momentum averages the extrapolated gradient ``g_t + beta (g_t - g_{t-1})``. Two
buffers: ``n`` and ``g_prev``.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Optional

import torch
from torch import Tensor

from tunefree.optim import native
from tunefree.optim._core import Bucket, Closure, TunefreeOptimizer
from tunefree.optim.elementwise import coupled_weight_decay
from tunefree.optim.validation import check_range

__all__ = ["RSGDM"]

FirstStep = Literal["zero_diff", "zero_prev"]


def _squared_norms(tensors: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """``[sum_i ||t_i||^2]`` (one 0-dim tensor in ``dtype``) from one multi-tensor norm: a handful of ops per
    block whatever the number of tensors (RSGDM's own step is so cheap that per-tensor ops would show)."""
    return [torch.stack(torch._foreach_norm(tensors)).to(dtype).square().sum()]


class RSGDM(TunefreeOptimizer):
    r"""RSGDM: EMA SGD-momentum plus ``beta`` times an EMA of gradient differences (2-buffer form).

    Per tensor, step ``t = 1, 2, ...``::

        g_t <- g_t + lambda x_t                                      (coupled L2, before differencing)
        n_t = beta n_{t-1} + (1 - beta) ((1 + beta) g_t - beta g_{t-1})     (n_0 = 0)
        x_{t+1} = x_t - lr n_t;   g_prev <- g_t

    which equals the paper's form ``m_t = EMA(g)``, ``z_t = EMA(g_t - g_{t-1})``, ``n_t = m_t + beta z_t``.

    **What lr means.** ``lr`` is the step size of *dampened* (EMA) momentum, about ``1/(1-beta)`` (10x)
    the learning rate of ``torch.optim.SGD(momentum=beta)``: ``SGD(lr=a, momentum=b)`` corresponds to
    ``RSGDM(lr=a/(1-b), beta=b)``. With ``correction=False`` and ``dampening=0`` that correspondence is
    exact, first step included (``n_t = (1-b) buf_t`` because torch's ``buf_1 = g_1`` is the zero-started
    sum); with ``correction=True`` it holds exactly against the undampened rectified momentum
    ``n'_t = b n'_{t-1} + (1+b) g_t - b g_{t-1}``, which torch does not have.
    ``SGD(momentum=b, dampening=b)`` differs from ``RSGDM(lr, beta=b, correction=False)`` by
    ``lr * b^t * g_1`` in the momentum (torch starts its buffer at ``g_1``, not at 0).

    UNVERIFIED choices (no official code; the equations come from a third-party page):

    * The correction coefficient is ``beta`` (a full lag correction would use ``beta / (1 - beta)``).
    * First step (``first_step``): ``"zero_diff"`` (default) takes ``g_0 = g_1``, so ``dg_1 = 0`` and
      ``n_1 = (1-beta) g_1`` (as Adan does); ``"zero_prev"`` takes ``g_0 = 0``, ``n_1 = (1-beta^2) g_1``.
    * No bias correction; weight decay is coupled L2 added before differencing (so ``g_prev`` holds it).

    Args:
        params: parameters or param groups.
        lr: step size of the EMA-form (dampened) momentum (default 1.0, i.e. torch SGD-M's 0.1 at beta 0.9).
        beta: EMA factor of the momentum, also the coefficient of the difference term (default 0.9). Stored in
            the param groups as ``"momentum"``, the key of torch's momentum-cycling schedulers (``OneCycleLR``,
            ``CyclicLR(cycle_momentum=True)``); a group or an old checkpoint with ``"beta"`` still works.
        weight_decay: coupled L2 ``lambda`` (default 0; 5e-4 in the CIFAR recipes).
        first_step: ``"zero_diff"`` or ``"zero_prev"`` (see above).
        correction: False drops the difference term: plain EMA SGD-momentum (one buffer, no ``g_prev``).
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    ``stats`` (only while ``extra_stats`` is True: ``RSGDM(..., extra_stats=True)``, or while
    :func:`tunefree.watch` watches the optimizer, which turns it on and back off; with the native CPU kernels
    it is two sums inside the step's one pass, on the foreach path four more passes over the model, about 3x
    the step time): ``correction_ratio``, the size of this step's correction term relative to the momentum,
    ``||beta (g_t - g_{t-1})|| / ||n_t||`` over the first param group (0 with ``correction=False``; large
    when consecutive gradients differ mostly by noise, small when the gradient drifts slowly);
    ``group_stats[k]["correction_ratio"]`` per group. Measured per process (not reduced across ranks).
    """

    legacy_group_keys = {"beta": "momentum"}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        beta: float = 0.9,
        weight_decay: float = 0.0,
        first_step: FirstStep = "zero_diff",
        correction: bool = True,
        *,
        extra_stats: bool = False,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, momentum=beta, weight_decay=weight_decay, first_step=first_step, correction=bool(correction)
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]
        #: measure ``correction_ratio`` (a diagnostic; the update is the same either way)
        self.extra_stats = bool(extra_stats)

    def validate_group(self, group: dict[str, Any]) -> None:
        check_range("RSGDM", "lr", group["lr"], 0.0)
        check_range("RSGDM", "momentum (beta)", group["momentum"], 0.0, 1.0, high_inclusive=False)
        check_range("RSGDM", "weight_decay", group["weight_decay"], 0.0)
        if group["first_step"] not in ("zero_diff", "zero_prev"):
            raise ValueError(f"RSGDM: first_step must be 'zero_diff' or 'zero_prev', got {group['first_step']!r}")

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"momentum_buffer": torch.zeros_like(param)}
        if group["correction"]:
            if group["first_step"] == "zero_diff":
                # g_0 = g_1 (with the L2 term, as the step will see it): the first difference is 0
                state["previous_grad"] = coupled_weight_decay([param], [grad], group["weight_decay"])[0].clone()
            else:
                state["previous_grad"] = torch.zeros_like(param)
        return state

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        if not getattr(self, "extra_stats", False):  # getattr: optimizers pickled before the option
            for group in self.param_groups:
                for bucket in self.buckets(group):
                    self._bucket_step(bucket, measure=False)
            return
        device, dtype = self.scalar_device_dtype()
        zero = torch.zeros((), device=device, dtype=dtype)
        ratios: list[dict[str, Tensor]] = []
        for group in self.param_groups:
            correction_sq, momentum_sq = zero, zero
            for bucket in self.buckets(group):
                bucket_correction_sq, bucket_momentum_sq = self._bucket_step(bucket)
                correction_sq = correction_sq + bucket_correction_sq.to(device)
                momentum_sq = momentum_sq + bucket_momentum_sq.to(device)
            safe = torch.where(momentum_sq > 0, momentum_sq, torch.ones_like(momentum_sq))
            ratio = torch.where(momentum_sq > 0, torch.sqrt(correction_sq / safe), zero)
            ratios.append({"correction_ratio": ratio})
        self.publish_stats(groups=ratios, correction_ratio=ratios[0]["correction_ratio"])

    def _bucket_step(self, bucket: Bucket, measure: bool = True) -> Optional[tuple[Tensor, Tensor]]:
        """Step the bucket; with ``measure`` return (||beta (g_t - g_{t-1})||^2, ||n_t||^2) over its tensors
        (local parts, no reduction across ranks: the ratio is a per-process diagnostic)."""
        _, dtype = self.scalar_device_dtype()
        group = bucket.group
        lr, beta = group["lr"], group["momentum"]
        correction = group["correction"]
        previous = bucket.state["previous_grad"] if correction else None
        if native.usable(bucket.params, bucket.grads, bucket.state["momentum_buffer"], previous or []):
            # one fused pass (the L2 term is added inside: no temporary gradient list)
            norms = native.rsgdm_step(bucket.grads, bucket.state["momentum_buffer"], previous, bucket.params, beta,
                                      lr, group["weight_decay"], measure=measure)
            if norms is None:
                return None
            device, _ = self.scalar_device_dtype()
            correction_norm_sq, momentum_norm_sq = (torch.tensor(v, device=device, dtype=dtype) for v in norms)
            return correction_norm_sq, momentum_norm_sq
        grads = coupled_weight_decay(bucket.params, bucket.grads, group["weight_decay"])
        lists = [bucket.params, grads, bucket.state["momentum_buffer"]]
        if correction:
            lists.append(bucket.state["previous_grad"])
        correction_sq: list[Tensor] = []
        momentum_sq: list[Tensor] = []
        for block, scratch in self.blocks(lists, scratch=(None,) if correction and measure else ()):
            params, block_grads, momentum = block[:3]
            if correction:
                previous = block[3]
                # previous <- g + beta (g - g_prev) = (1 + beta) g - beta g_prev, in place (one pass)
                torch._foreach_lerp_(previous, block_grads, 1.0 + beta)
                torch._foreach_lerp_(momentum, previous, 1.0 - beta)
                if measure:
                    # the correction term beta (g - g_prev), measured while the block is in cache
                    work = scratch[0]
                    torch._foreach_copy_(work, previous)
                    torch._foreach_sub_(work, block_grads)
                    correction_sq += _squared_norms(work, dtype)
                torch._foreach_copy_(previous, block_grads)
            else:
                torch._foreach_lerp_(momentum, block_grads, 1.0 - beta)
            if measure:
                momentum_sq += _squared_norms(momentum, dtype)
            torch._foreach_add_(params, momentum, alpha=-lr)
        if not measure:
            return None
        zero = momentum_sq[0].new_zeros(())
        return (torch.stack(correction_sq).sum() if correction_sq else zero), torch.stack(momentum_sq).sum()
