r"""SMES: Second-Moment Exponential Scaling (Zhang & Liu, "Unified Balance Theory", arXiv 2405.18498).

Adam with a tunable exponent ``alpha`` ("balance coefficient") on the bias-corrected second moment:

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

    \hat m_t = m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t),

    \theta_{t+1} = \theta_t - \eta\, \hat m_t / (\hat v_t^{\alpha} + \epsilon).

``alpha = 0.5`` is exactly Adam; ``alpha = 0`` is SGD with bias-corrected EMA momentum and step
``eta / (1 + eps)``. The step scales like ``|g|^(1 - 2 alpha)``, so ``lr`` must be re-tuned per ``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

from tunefree.optim._core import Bucket, Closure, TunefreeOptimizer
from tunefree.optim.elementwise import (
    advance_step_counters,
    bias_correction,
    coupled_weight_decay,
    decoupled_weight_decay_,
    new_step_counter,
)
from tunefree.optim.validation import check_betas, check_range

__all__ = ["AlphaSchedule", "SMES"]

ScheduleKind = Literal["constant", "linear", "cosine"]


@dataclass(frozen=True)
class AlphaSchedule:
    """A schedule of SMES's exponent over the optimizer's steps ``k = 1, 2, ...``.

    ``linear``: ``start + (end - start) * min(k, steps) / steps``; ``cosine``: ``end + (start - end) *
    (1 + cos(pi * min(k, steps) / steps)) / 2``; both hold ``end`` after ``steps`` steps. It travels in the
    optimizer's ``state_dict()`` as the plain tuple ``(kind, start, end, steps)`` (safe for
    ``torch.load(weights_only=True)``), so a resumed run continues mid-schedule exactly.
    """

    kind: ScheduleKind
    start: float
    end: float
    steps: int

    @classmethod
    def constant(cls, value: float) -> "AlphaSchedule":
        return cls("constant", float(value), float(value), 1)

    @classmethod
    def linear(cls, start: float, end: float, steps: int) -> "AlphaSchedule":
        return cls("linear", float(start), float(end), int(steps))

    @classmethod
    def cosine(cls, start: float, end: float, steps: int) -> "AlphaSchedule":
        return cls("cosine", float(start), float(end), int(steps))

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "cosine"):
            raise ValueError(f"SMES: alpha schedule kind must be 'constant', 'linear' or 'cosine', got {self.kind!r}")
        if int(self.steps) < 1:
            raise ValueError(f"SMES: alpha schedule steps must be >= 1, got {self.steps!r}")

    def __call__(self, step: int) -> float:
        progress = min(step, self.steps) / self.steps
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.start

    def as_tuple(self) -> tuple[str, float, float, int]:
        return (self.kind, self.start, self.end, self.steps)

    @classmethod
    def parse(cls, value: Any) -> "AlphaSchedule":
        """From an ``AlphaSchedule``, a tuple ``(kind, start, end, steps)`` or a dict with those keys."""
        if isinstance(value, AlphaSchedule):
            return value
        if isinstance(value, dict):
            return cls(value["kind"], float(value["start"]), float(value["end"]), int(value["steps"]))
        if isinstance(value, (tuple, list)) and len(value) == 4 and isinstance(value[0], str):
            return cls(value[0], float(value[1]), float(value[2]), int(value[3]))  # type: ignore[arg-type]
        raise ValueError(
            f"SMES: alpha must be a number, an AlphaSchedule, a tuple (kind, start, end, steps), a dict with "
            f"those keys, or a callable step -> alpha; got {value!r}"
        )


AlphaLike = Union[float, AlphaSchedule, tuple, dict, Callable[[int], float]]


def _normalised_alpha(value: AlphaLike) -> Union[float, tuple, Callable[[int], float]]:
    """What a param group stores: a float, a plain schedule tuple, or a user callable."""
    if isinstance(value, bool):
        raise ValueError(f"SMES: alpha must be a number or a schedule, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if callable(value) and not isinstance(value, AlphaSchedule):
        return value
    schedule = AlphaSchedule.parse(value)
    return schedule.start if schedule.kind == "constant" else schedule.as_tuple()


def _power_(tensors: list[Tensor], exponent: float) -> None:
    """``tensors <- tensors ** exponent`` in place. Dyadic exponents use square roots (one cheap pass each);
    any other is ``exp(exponent * log(t))`` (cheaper than ``pow`` on CPU, equal to ~1 ulp). Both give
    ``0 ** a = 0`` for ``a > 0`` and ``inf`` for ``a < 0``."""
    if exponent == 1.0:
        return
    if exponent == 0.0:
        torch._foreach_zero_(tensors)  # t ** 0 = 1, also for t = 0
        torch._foreach_add_(tensors, 1.0)
        return
    for roots, dyadic in ((1, 0.5), (2, 0.25), (3, 0.125)):
        if exponent == dyadic:
            for _ in range(roots):
                torch._foreach_sqrt_(tensors)
            return
    torch._foreach_log_(tensors)
    torch._foreach_mul_(tensors, exponent)
    torch._foreach_exp_(tensors)


class SMES(TunefreeOptimizer):
    r"""SMES: Adam whose second moment enters with a tunable exponent ``alpha`` (0 = SGD-M, 0.5 = Adam).

    Per tensor, ``t`` its step counter::

        g_t <- g_t + lambda x_t                       (weight_decay, coupled; default)
        x_t <- (1 - lr lambda) x_t                    (weight_decay with decoupled_weight_decay=True)
        m_t = beta1 m_{t-1} + (1 - beta1) g_t,  v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        x_{t+1} = x_t - lr * (m_t / (1 - beta1^t)) / ((v_t / (1 - beta2^t))^alpha + eps)

    with ``0^alpha = 0`` for ``alpha > 0`` and ``vhat^0 = 1``. ``alpha=0.5`` equals ``torch.optim.Adam``
    (coupled decay: Adam's ``weight_decay``; decoupled: ``AdamW``). ``alpha=0`` is SGD with bias-corrected
    EMA momentum, ``x -= lr / (1 + eps) * mhat``.

    UNVERIFIED choices (the paper body was not available, only the quoted update formula):

    * ``v`` is bias-corrected **before** the power (``vhat^alpha``), as the hat in the quoted formula
      suggests; Padam-style code corrects by ``sqrt(1 - beta2^t)`` whatever the exponent
      (``padam_compat=True`` reproduces that). The two differ by ``(1 - beta2^t)^(alpha - 1/2)``, i.e. SMES
      steps are several times larger during the first thousands of steps at ``alpha = 0.25``.
    * ``eps`` is added **outside** the power (to ``vhat^alpha``), as in the formula and in Adam, so that
      ``alpha = 0.5`` is exactly Adam.
    * Weight decay is not specified by the paper: coupled L2 by default (as in SGD/Padam CIFAR recipes),
      AdamW-style decoupled decay (scaled by the current ``lr``) as an option.
    * ``betas``, ``eps``: Adam's.

    Args:
        params: parameters or param groups.
        lr: step size of ``mhat / (vhat^alpha + eps)``. Its scale depends on ``alpha`` (the step scales like
            ``|g|^(1 - 2 alpha)``): Adam-like values (1e-3) near 0.5, SGD-M-like values (EMA form, ~1.0)
            near 0. Default 1e-3.
        alpha: the exponent: a number in ``[0, 0.5]`` (default 0.25), or a schedule over the steps
            ``k = 1, 2, ...`` of ``step()``: an :class:`AlphaSchedule` (``AlphaSchedule.linear(0.5, 0.0,
            10_000)``, ``.cosine(...)``), the same as a tuple ``("linear", start, end, steps)`` or a dict,
            or any callable ``int -> float`` (that one is stored in ``state_dict()`` as the callable itself,
            so it must be picklable to be saved; prefer ``AlphaSchedule``). The schedule position is the
            param group's ``"alpha_step"`` (a Python int, saved in ``state_dict()``), so resuming continues
            the schedule exactly and computing alpha never touches the device.
        betas: EMA factors of ``m`` and ``v`` (default Adam's).
        eps: added to ``vhat^alpha`` (outside the power).
        weight_decay: ``lambda`` (default 0).
        decoupled_weight_decay: AdamW-style ``x <- (1 - lr lambda) x`` instead of coupled L2.
        allow_any_alpha: accept exponents outside ``[0, 0.5]`` (negative or above 0.5; used by the authors'
            follow-up work, not covered by the SGD-Adam interpolation argument).
        padam_compat: the update of Padam / ``pytorch_optimizer.PAdam`` (``partial = alpha``):
            ``x -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)^(2 alpha)``.
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    ``stats``: ``alpha`` (the first group's exponent at the last step); ``group_stats[k]["alpha"]``: group
    ``k``'s exponent.

    State per tensor: ``exp_avg``, ``exp_avg_sq`` (in the parameter's dtype, like torch's Adam) and
    ``step`` (0-dim float64 counter; the bias corrections are computed from it on the device).
    ``torch.compile(fullgraph=True)`` of ``step()`` works with a constant ``alpha`` (a schedule changes a
    Python number every step, which recompiles).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        alpha: AlphaLike = 0.25,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        allow_any_alpha: bool = False,
        padam_compat: bool = False,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, alpha=alpha, betas=betas, eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=bool(decoupled_weight_decay), allow_any_alpha=bool(allow_any_alpha),
            padam_compat=bool(padam_compat), alpha_step=0,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]

    def validate_group(self, group: dict[str, Any]) -> None:
        check_range("SMES", "lr", group["lr"], 0.0)
        group["betas"] = check_betas("SMES", group["betas"])
        check_range("SMES", "eps", group["eps"], 0.0)
        check_range("SMES", "weight_decay", group["weight_decay"], 0.0)
        group["alpha"] = _normalised_alpha(group["alpha"])
        alpha = group["alpha"]
        if isinstance(alpha, tuple):
            for value in (alpha[1], alpha[2]):  # a linear/cosine schedule stays between its ends
                self._check_alpha(value, group)
        elif not callable(alpha):
            self._check_alpha(alpha, group)

    @staticmethod
    def _check_alpha(value: float, group: dict[str, Any]) -> float:
        if group["allow_any_alpha"]:
            return check_range("SMES", "alpha", value)
        return check_range(
            "SMES", "alpha (pass allow_any_alpha=True for values outside [0, 0.5])", value, 0.0, 0.5
        )

    def alpha_at(self, group: dict[str, Any], step: int) -> float:
        """The exponent ``group`` uses at its ``step``-th step (Python float; no device access)."""
        alpha = group["alpha"]
        if isinstance(alpha, float):
            return alpha
        schedule = AlphaSchedule.parse(alpha) if isinstance(alpha, tuple) else alpha
        return self._check_alpha(float(schedule(step)), group)

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "step": new_step_counter(param),
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": torch.zeros_like(param),
        }

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        alphas: list[float] = []
        for group in self.param_groups:
            if isinstance(group["alpha"], float):
                alpha = group["alpha"]
            else:
                # Only schedules count steps: a constant alpha leaves the group unchanged (no recompiles).
                group["alpha_step"] += 1
                alpha = self.alpha_at(group, group["alpha_step"])
            alphas.append(alpha)
            for bucket in self.buckets(group):
                self._bucket_step(bucket, alpha)
        device, dtype = self.scalar_device_dtype()
        per_group = [{"alpha": torch.full((), alpha, device=device, dtype=dtype)} for alpha in alphas]
        self.publish_stats(groups=per_group, alpha=per_group[0]["alpha"])

    def _bucket_step(self, bucket: Bucket, alpha: float) -> None:
        group = bucket.group
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        steps = advance_step_counters(bucket.state["step"])
        bc1, bc2 = bias_correction(steps, beta1), bias_correction(steps, beta2)
        if group["padam_compat"]:
            # x -= lr * m / ((sqrt(v) + eps)^(2 alpha) * bc1 / sqrt(bc2))
            denominator_scale = (bc1 / bc2.sqrt()).unbind(0)
            denominator_shift = None
        elif alpha == 0.0:
            # vhat^0 = 1: x -= lr / (bc1 (1 + eps)) * m
            denominator_scale = (-lr / (bc1 * (1.0 + eps))).unbind(0)
            denominator_shift = None
        else:
            # lr * (m / bc1) / (v^a / bc2^a + eps) == lr * m / (v^a * bc1 / bc2^a + eps * bc1): the bias
            # corrections fold into the one denominator pass that has to exist anyway.
            denominator_scale = (bc1 / bc2.pow(alpha)).unbind(0)
            denominator_shift = (eps * bc1).unbind(0)

        if group["decoupled_weight_decay"]:
            decoupled_weight_decay_(bucket.params, 1.0 - lr * weight_decay)
            grads = bucket.grads
        else:
            grads = coupled_weight_decay(bucket.params, bucket.grads, weight_decay)

        lists = [bucket.params, grads, bucket.state["exp_avg"], bucket.state["exp_avg_sq"], list(denominator_scale)]
        if denominator_shift is not None:
            lists.append(list(denominator_shift))
        for block, (denominator,) in self.blocks(lists, scratch=(None,)):
            params, block_grads, exp_avg, exp_avg_sq, scale = block[:5]
            torch._foreach_lerp_(exp_avg, block_grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, block_grads, block_grads, value=1.0 - beta2)
            if lr == 0.0:
                continue  # moments still advance; the parameters stay
            if alpha == 0.0 and not group["padam_compat"]:
                torch._foreach_addcmul_(params, exp_avg, scale)
                continue
            # the denominator is built in the block's scratch buffer, in place
            torch._foreach_copy_(denominator, exp_avg_sq)
            if group["padam_compat"]:
                torch._foreach_sqrt_(denominator)
                torch._foreach_add_(denominator, eps)
                _power_(denominator, 2.0 * alpha)
                torch._foreach_mul_(denominator, scale)
            else:
                _power_(denominator, alpha)
                torch._foreach_mul_(denominator, scale)
                torch._foreach_add_(denominator, block[5])
            torch._foreach_addcdiv_(params, exp_avg, denominator, value=-lr)
