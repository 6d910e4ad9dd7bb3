r"""AGD: auto-switchable optimizer using stepwise gradient difference (Yue et al., NeurIPS 2023).

Implemented from the authors' code (atorch ``optimizers/agd.py``, checked against the paper's update rule).
Per tensor, ``t`` its step counter, ``mhat_t = m_t / (1 - beta1^t)`` (``mhat_0 = 0``):

.. math::

    s_t = \hat m_t - \hat m_{t-1} = \frac{1-\beta_1}{1-\beta_1^t}\,(g_t - \hat m_{t-1}), \qquad
    b_t = \beta_2 b_{t-1} + (1-\beta_2) s_t^2,

    x_{t+1} = x_t - \eta\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\;
              \frac{m_t}{\max\big(\sqrt{b_t},\ \delta\sqrt{1-\beta_2^t}\big)}
            = x_t - \eta\,\frac{\hat m_t}{\max(\sqrt{\hat b_t},\ \delta)} .

Coordinates with ``sqrt(bhat_t) <= delta`` take an SGD-momentum step with learning rate ``lr / delta``,
the others an Adam-like step: the "auto-switch".
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor

from tunefree.optim import native
from tunefree.optim._core import Bucket, Closure, TunefreeOptimizer
from tunefree.optim.elementwise import (
    advance_step_counters,
    bias_correction,
    coupled_weight_decay,
    decoupled_weight_decay_,
    new_step_counter,
)
from tunefree.optim.kernels import divide_into_
from tunefree.optim.validation import check_betas, check_range

__all__ = ["AGD"]


class AGD(TunefreeOptimizer):
    r"""AGD: a diagonal preconditioner from the EMA of squared differences of the bias-corrected momentum,
    switching per coordinate between SGD-momentum and adaptive steps at the threshold ``delta``.

    Step ``t`` of a tensor (the authors' code, in its order)::

        x <- (1 - lr lambda) x      (weight decay FIRST: decoupled, default)
        x <- (1 - lambda) x         (fixed_decay=True)
        g <- g + lambda x           (decoupled_weight_decay=False: coupled L2)
        s_t = (1 - beta1) / (1 - beta1^t) * (g - mhat_{t-1})   (= mhat_t - mhat_{t-1}; s_1 = g_1)
        m_t = beta1 m + (1 - beta1) g;   b_t = beta2 b + (1 - beta2) s_t^2   (b_max <- max(b_max, b_t): amsgrad)
        r_t = m_t / max(sqrt(b_t), delta sqrt(1 - beta2^t));   r_t <- clamp(r_t, -clip, clip)  (if clip)
        x <- x - lr sqrt(1 - beta2^t) / (1 - beta1^t) * r_t

    ``clip`` acts on the ratio before the bias-correction scale factor, as in the authors' code. The
    difference ``s_t`` is built in a cache-block scratch buffer as ``ds (g - m_{t-1} / (1 - beta1^(t-1)))``
    (algebraically exact). The bias-correction scalars are
    computed in float64 from a float64 per-tensor step counter (the current authors' file counts in
    float32, which perturbs trajectories by ~1e-4 relative). The ``win`` variant of the code
    is not implemented (not in the paper as far as could be checked).

    Args:
        params: parameters or param groups.
        lr: Adam-like step size; coordinates in the SGD regime move by ``(lr / delta) * mhat``. The authors
            advise 1/10 of AdamW's value (the statistic ``sqrt(bhat)`` is ~(1-beta1) times the gradient's
            deviation from its mean). Default 1e-3.
        betas: EMA factors of ``m`` and ``b`` (default (0.9, 0.999)).
        delta: switching threshold and stabiliser (code default 1e-5; the authors' README suggests 1e-14
            for Transformers, their CIFAR example 1e-8). With nearly deterministic gradients ``bhat`` decays
            and coordinates switch to the large SGD step ``lr / delta``: watch ``stats["frac_sgd_like"]``.
        weight_decay: ``lambda`` (default 0).
        decoupled_weight_decay: AdamW-style decay applied to the parameter before the step (default True,
            the code's ``weight_decouple``); False: coupled L2 added to the gradient.
        fixed_decay: with decoupled decay, ``x <- (1 - lambda) x`` (not scaled by ``lr``).
        amsgrad: use the running maximum of ``b`` (one more buffer).
        clip: clamp the ratio ``m / den`` to ``[-clip, clip]`` (the README suggests 5 against instability).
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    ``stats``: ``frac_sgd_like``, the fraction of coordinates (over all parameters stepped) with
    ``sqrt(b_t) <= delta sqrt(1 - beta2^t)`` at the last step (a 0-dim tensor; no host sync);
    ``group_stats[k]["frac_sgd_like"]``: the same fraction over param group ``k``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        delta: float = 1e-5,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        fixed_decay: bool = False,
        amsgrad: bool = False,
        clip: Optional[float] = None,
        *,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, delta=delta, weight_decay=weight_decay,
            decoupled_weight_decay=bool(decoupled_weight_decay), fixed_decay=bool(fixed_decay),
            amsgrad=bool(amsgrad), clip=clip,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]

    def validate_group(self, group: dict[str, Any]) -> None:
        check_range("AGD", "lr", group["lr"], 0.0)
        group["betas"] = check_betas("AGD", group["betas"])
        check_range("AGD", "delta", group["delta"], 0.0, low_inclusive=False)
        check_range("AGD", "weight_decay", group["weight_decay"], 0.0)
        if group["clip"] is not None:
            check_range("AGD", "clip", group["clip"], 0.0, low_inclusive=False)

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {
            "step": new_step_counter(param),
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": torch.zeros_like(param),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        device, dtype = self.scalar_device_dtype()
        sgd_like = torch.zeros((), device=device, dtype=dtype)
        total = 0
        fractions: list[dict[str, Tensor]] = []
        for group in self.param_groups:
            group_sgd_like = torch.zeros((), device=device, dtype=dtype)
            group_total = 0
            for bucket in self.buckets(group):
                group_sgd_like = group_sgd_like + self._bucket_step(bucket).to(device=device, dtype=dtype)
                group_total += sum(p.numel() for p in bucket.params)
            fractions.append({"frac_sgd_like": group_sgd_like / max(group_total, 1)})
            sgd_like = sgd_like + group_sgd_like
            total += group_total
        self.publish_stats(groups=fractions, frac_sgd_like=sgd_like / max(total, 1))

    def _bucket_step(self, bucket: Bucket) -> Tensor:
        """One step of the bucket's tensors; returns the number of SGD-like coordinates (0-dim)."""
        group = bucket.group
        lr, delta, weight_decay, clip = group["lr"], group["delta"], group["weight_decay"], group["clip"]
        beta1, beta2 = group["betas"]
        steps = advance_step_counters(bucket.state["step"])
        bc1, bc2 = bias_correction(steps, beta1), bias_correction(steps, beta2)
        bc1_previous = bias_correction(steps - 1.0, beta1)
        difference_scale = (1.0 - beta1) / bc1
        # -1/bc1_{t-1}: multiplies m_{t-1} inside s_t = ds (g - mhat_{t-1}); at t = 1 mhat_0 = 0 (and bc1_0 = 0).
        safe_previous = torch.where(steps > 1.0, bc1_previous, torch.ones_like(bc1_previous))
        previous_ratio = torch.where(steps > 1.0, -1.0 / safe_previous, torch.zeros_like(bc1))  # s_t = ds (g + ratio m)
        bc2_sqrt = bc2.sqrt()
        threshold = delta * bc2_sqrt
        if clip is None:
            # lr * (bc2_sqrt / bc1) * m / max(sqrt b, thr) == lr * m / max(sqrt(b) k, thr k), k = bc1 / bc2_sqrt
            denominator_scale = bc1 / bc2_sqrt
            threshold = threshold * denominator_scale
        else:
            denominator_scale = bc2_sqrt / bc1  # the scale factor, applied after clipping

        decoupled = group["decoupled_weight_decay"]
        decay_factor = 1.0 - (weight_decay if group["fixed_decay"] else lr * weight_decay) if decoupled else 1.0
        moments = [bucket.state["exp_avg"], bucket.state["exp_avg_sq"]]
        if not group["amsgrad"] and clip is None and native.usable(bucket.params, bucket.grads, *moments):
            # one fused pass: decay, difference, moments, switch and update (the L2 term is added inside)
            count = native.agd_step(
                bucket.grads, *moments, bucket.params, difference_scale.tolist(), previous_ratio.tolist(),
                threshold.tolist(), denominator_scale.tolist(), beta1, beta2, lr, decay_factor,
                0.0 if decoupled else weight_decay,
            )
            return torch.tensor(count, dtype=torch.int64)
        if decoupled:
            decoupled_weight_decay_(bucket.params, decay_factor)
            grads = bucket.grads
        else:
            grads = coupled_weight_decay(bucket.params, bucket.grads, weight_decay)

        exp_avg_sq = bucket.state["max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"]
        lists = [
            bucket.params, grads, bucket.state["exp_avg"], bucket.state["exp_avg_sq"], exp_avg_sq,
            # in the parameters' dtype once here, not cast again by every op on every block
            *(list(v.to(bucket.params[0].dtype).unbind(0))
              for v in (difference_scale, previous_ratio, threshold, denominator_scale)),
        ]
        counts: list[Tensor] = []
        # Per block, in cache: two temporaries (s_t, then the denominator; the SGD-like indicator).
        for block, (work, indicator) in self.blocks(lists, scratch=(None, None)):
            params, block_grads, exp_avg, b, b_used, diff_scale, prev_ratio, thresholds, den_scale = block
            # s_t = ds * (g + (ps / ds) m), before m moves on (addcmul_ with a 0-dim factor is slow on CPU)
            torch._foreach_copy_(work, exp_avg)
            torch._foreach_mul_(work, prev_ratio)
            torch._foreach_add_(work, block_grads)
            torch._foreach_mul_(work, diff_scale)
            torch._foreach_lerp_(exp_avg, block_grads, 1.0 - beta1)
            torch._foreach_mul_(b, beta2)
            torch._foreach_addcmul_(b, work, work, value=1.0 - beta2)
            if group["amsgrad"]:
                torch._foreach_maximum_(b_used, b)
            denominator = work  # s_t is no longer needed
            torch._foreach_copy_(denominator, b_used)
            torch._foreach_sqrt_(denominator)
            if clip is None:
                torch._foreach_mul_(denominator, den_scale)
            torch._foreach_maximum_(denominator, thresholds)
            # SGD-like: the threshold won the maximum (ties count, as in sqrt(b) <= thr). thr / den is in
            # (0, 1] and exactly 1 there (IEEE division of x < y never rounds up to 1), so floor() is the
            # 0/1 indicator and its sum the count: cheaper than a bool mask from eq() and its count.
            for d, thr, ind in zip(denominator, thresholds, indicator):
                torch.div(thr, d, out=ind)
            torch._foreach_floor_(indicator)
            counts += [ind.sum() for ind in indicator]
            if clip is None:
                torch._foreach_addcdiv_(params, exp_avg, denominator, value=-lr)
            else:
                ratio = denominator
                divide_into_(exp_avg, ratio)
                torch._foreach_clamp_min_(ratio, -clip)
                torch._foreach_clamp_max_(ratio, clip)
                torch._foreach_mul_(ratio, den_scale)
                torch._foreach_add_(params, ratio, alpha=-lr)
        return torch.stack(counts).to(torch.int64).sum()  # each count is an exact integer
