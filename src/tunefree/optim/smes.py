r"""SMES: Second-Moment Exponential Scaling (Zhang & Liu, "Unified Balance Theory", arXiv 2405.18498).

Adam with a tunable exponent ``alpha`` ("balance coefficient") on the bias-corrected second moment:

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

    \hat m_t = m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t),

    \theta_{t+1} = \theta_t - \eta\, \hat m_t / (\hat v_t^{\alpha} + \epsilon).

``alpha = 0.5`` is exactly Adam; ``alpha = 0`` is SGD with bias-corrected EMA momentum and step
``eta / (1 + eps)``. That step scales like ``|g|^(1 - 2 alpha)``, so one ``lr`` cannot fit every ``alpha``.

By default (``lr_scaling="initial"``, a tunefree choice, not the paper's) the update is the paper's with
``eta`` and ``eps`` both multiplied, once and for all, by ``v_ref^(alpha - 1/2)``, where ``v_ref`` is the mean
squared gradient over all parameters at the first step:

.. math::

    \theta_{t+1} = \theta_t - \eta\, \hat m_t / (\hat v_t^{\alpha}\, v_{ref}^{1/2-\alpha} + \epsilon),

so ``lr`` has Adam's units for every ``alpha`` (the run is invariant to rescaling the loss) while the
dynamics are exactly the paper's (the step still shrinks like ``|g|^(1 - 2 alpha)`` as gradients shrink).
``lr_scaling="rms"`` uses the running per-tensor mean ``mean(vhat_t)`` instead of ``v_ref`` (scale-invariant
at every step, Adam-like); ``lr_scaling="legacy"`` is the paper's formula above, bit for bit the previous
versions of this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union

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
from tunefree.optim.kernels import as_real, dot, local_tensor
from tunefree.optim.validation import check_betas, check_range

__all__ = ["AlphaSchedule", "SMES"]

ScheduleKind = Literal["constant", "linear", "cosine"]
LRScaling = Literal["initial", "rms", "legacy"]


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

    Per tensor, ``t`` its step counter, ``mhat = m_t / (1 - beta1^t)``, ``vhat = v_t / (1 - beta2^t)``::

        g_t <- g_t + lambda x_t                       (weight_decay, coupled; default)
        x_t <- (1 - lr lambda) x_t                    (weight_decay with decoupled_weight_decay=True)
        m_t = beta1 m_{t-1} + (1 - beta1) g_t,  v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        x_{t+1} = x_t - lr * mhat / (vhat^alpha * v_ref^(1/2 - alpha) + eps)  (lr_scaling="initial", default)
        x_{t+1} = x_t - lr * mhat / (vhat^alpha * vbar^(1/2 - alpha) + eps)   (lr_scaling="rms")
        x_{t+1} = x_t - lr * mhat / (vhat^alpha + eps)                         (lr_scaling="legacy")

    with ``v_ref`` the mean of ``g^2`` over every element of the param group's parameters at its first step
    (1 if that is 0), ``vbar = mean(vhat)`` over the elements of the tensor (``vbar^(1/2 - alpha) = 1`` where
    ``vbar = 0``), ``0^alpha = 0`` for ``alpha > 0`` and ``vhat^0 = 1``. ``alpha=0.5`` equals
    ``torch.optim.Adam`` under every scaling (coupled decay: Adam's ``weight_decay``; decoupled:
    ``AdamW``). ``alpha=0`` with ``"legacy"`` is SGD with bias-corrected EMA momentum,
    ``x -= lr / (1 + eps) * mhat``; with ``"initial"`` the same at ``lr / sqrt(v_ref)``; with ``"rms"``
    EMA momentum normalised per tensor, ``x -= lr * mhat / (sqrt(vbar) + eps)``.

    Why (a tunefree deviation from the paper's formula, which is ``"legacy"``): the paper's step scales like
    ``|g|^(1 - 2 alpha)``, so its ``lr`` has different units for every ``alpha`` and the best value moves by
    decades with the gradient scale of the task (standard benchmark suite at ``alpha = 0.25``: best ``lr``
    0.01-0.1, 10-100x the default 1e-3; one-shot default success on 1 of 9 tasks). ``"initial"`` fixes the
    units with one constant measured at the first step, so the trajectory is the paper's at a converted
    ``lr``; measured on the five fast benchmark tasks (seed 0) it is the best of the three at the default
    ``lr = 1e-3`` (docs/optimizers-defaults.md). ``"rms"`` is Adam-like at every step and lost the SGD-like
    annealing that helps on the convex tasks.

    Converting an old (``"legacy"``) setting: ``lr_legacy = lr * v_ref^(alpha - 1/2)`` and
    ``eps_legacy = eps * v_ref^(alpha - 1/2)`` exactly (``stats["v_ref"]`` reports ``v_ref``); or pass
    ``lr_scaling="legacy"`` to reproduce old runs bit for bit.

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
        lr: step size. With ``lr_scaling="initial"`` (default) or ``"rms"`` it has Adam's units for every
            ``alpha`` (default 1e-3, Adam's). With ``"legacy"`` its scale depends on ``alpha`` (the step scales like
            ``|g|^(1 - 2 alpha)``): Adam-like values (1e-3) near 0.5, SGD-M-like values (EMA form, ~1.0)
            near 0.
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
            ``x -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)^(2 alpha)`` (Padam's own
            ``lr`` units: ``lr_scaling`` does not apply to it).
        lr_scaling: ``"initial"`` (default), ``"rms"`` or ``"legacy"`` (the paper's formula, the previous
            versions' behaviour); see above. ``None`` picks ``"legacy"`` with ``padam_compat=True`` and
            ``"initial"`` otherwise. A state_dict saved before this option existed
            resumes with ``"legacy"``, the math it was trained with.
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    ``stats``: ``alpha`` (the first group's exponent at the last step); ``group_stats[k]["alpha"]``: group
    ``k``'s exponent; ``v_ref`` (the first group's) once measured (``lr_scaling="initial"``).

    State per tensor: ``exp_avg``, ``exp_avg_sq`` (in the parameter's dtype, like torch's Adam) and
    ``step`` (0-dim float64 counter; the bias corrections are computed from it on the device).
    ``torch.compile(fullgraph=True)`` of ``step()`` works with a constant ``alpha`` (a schedule changes a
    Python number every step, which recompiles).
    """

    legacy_group_values = {"lr_scaling": "legacy"}  # checkpoints from before the option ran the paper's formula

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
        lr_scaling: Optional[LRScaling] = None,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, alpha=alpha, betas=betas, eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=bool(decoupled_weight_decay), allow_any_alpha=bool(allow_any_alpha),
            padam_compat=bool(padam_compat), alpha_step=0,
            lr_scaling=("legacy" if padam_compat else "initial") if lr_scaling is None else lr_scaling,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]

    def validate_group(self, group: dict[str, Any]) -> None:
        check_range("SMES", "lr", group["lr"], 0.0)
        group["betas"] = check_betas("SMES", group["betas"])
        check_range("SMES", "eps", group["eps"], 0.0)
        check_range("SMES", "weight_decay", group["weight_decay"], 0.0)
        group["alpha"] = _normalised_alpha(group["alpha"])
        group.setdefault("lr_scaling", "legacy" if group.get("padam_compat") else "initial")
        if group["lr_scaling"] not in ("initial", "rms", "legacy"):
            raise ValueError(
                f"SMES: lr_scaling must be 'initial', 'rms' or 'legacy', got {group['lr_scaling']!r}"
            )
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

    def _reference_second_moment(self, index: int) -> Tensor:
        """``v_ref`` of param group ``index``: the mean squared gradient over its parameters at its first
        step (1 if that is 0). Per group, so that groups behave as separate optimizers would.

        Measured once (a Python fact, ``"v_ref_<index>"`` in the global state: no host sync afterwards),
        saved in ``state_dict()``; with sharded parameters the sums are global (one all-reduce).
        """
        key = f"v_ref_{index}"
        if key not in self.global_state:
            device, dtype = self.scalar_device_dtype()
            square_sum = torch.zeros((), device=device, dtype=dtype)
            count = 0
            for param in self.param_groups[index]["params"]:
                if param.grad is not None:
                    grad = as_real(param.grad)  # a complex parameter counts as its real view
                    square_sum = square_sum + dot(grad, grad, dtype)
                    count += local_tensor(grad).numel()
            if count == 0:  # no gradient yet: measure at the group's first step with one
                return torch.ones((), device=device, dtype=dtype)
            totals, _ = self.reduce([square_sum, torch.tensor(float(count))])
            mean = totals[0] / totals[1].clamp(min=1.0)
            self.global_state[key] = torch.where(mean > 0, mean, 1.0)
        return self.global_state[key]

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        for index, group in enumerate(self.param_groups):
            if group.get("lr_scaling") == "initial" and not group["padam_compat"]:
                self._reference_second_moment(index)  # at the group's first step, whatever alpha is then
        alphas: list[float] = []
        for index, group in enumerate(self.param_groups):
            if isinstance(group["alpha"], float):
                alpha = group["alpha"]
            else:
                # Only schedules count steps: a constant alpha leaves the group unchanged (no recompiles).
                group["alpha_step"] += 1
                alpha = self.alpha_at(group, group["alpha_step"])
            alphas.append(alpha)
            for bucket in self.buckets(group):
                self._bucket_step(bucket, alpha, index)
        if "v_ref_0" in self.global_state:
            extra = {"v_ref": self.global_state["v_ref_0"].clone()}
        else:
            extra = {}
        device, dtype = self.scalar_device_dtype()
        per_group = [{"alpha": torch.full((), alpha, device=device, dtype=dtype)} for alpha in alphas]
        self.publish_stats(groups=per_group, alpha=per_group[0]["alpha"], **extra)

    @staticmethod
    def _tensor_rms_factor(bucket: Bucket, grads: list[Tensor], bc2: Tensor, alpha: float) -> Tensor:
        """``vbar_t^(1/2 - alpha)`` per tensor (stacked, float64 like ``bc2``), ``vbar_t = mean(v_t) / bc2``.

        Computed before the moments are updated, from ``sum(v_t) = beta2 sum(v_(t-1)) + (1 - beta2)
        ||g_t||^2`` (``v >= 0``, so its 1-norm is its sum): two reductions over whole tensors, so the
        cache-blocked update pass that follows stays one pass (a tensor may be cut across blocks there).
        """
        beta2 = bucket.group["betas"][1]
        dtype = torch.promote_types(bucket.params[0].dtype, torch.float32)
        v_sums = torch.stack(torch._foreach_norm(bucket.state["exp_avg_sq"], 1, dtype=dtype)).to(bc2.dtype)
        g_norms = torch.stack(torch._foreach_norm(grads, 2, dtype=dtype)).to(bc2.dtype)
        numels = torch.tensor([p.numel() for p in bucket.params], dtype=bc2.dtype, device=bc2.device)
        vbar = (beta2 * v_sums + (1.0 - beta2) * g_norms.square()) / (numels * bc2)
        # vbar = 0 only where every gradient so far was 0, so m = 0 and the step is 0 whatever the factor;
        # 1 there keeps 0 * inf (alpha > 1/2 with allow_any_alpha) out of the update.
        return torch.where(vbar > 0, vbar, 1.0).pow(0.5 - alpha)

    def _bucket_step(self, bucket: Bucket, alpha: float, index: int) -> None:
        group = bucket.group
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        # .get: a param group saved before the option existed trained with the paper's formula
        scaling = "legacy" if group["padam_compat"] else group.get("lr_scaling", "legacy")
        steps = advance_step_counters(bucket.state["step"])
        bc1, bc2 = bias_correction(steps, beta1), bias_correction(steps, beta2)

        decoupled = group["decoupled_weight_decay"]
        # (the decoupled decay of the parameters comes later, in the update pass: nothing reads them before)
        grads = bucket.grads if decoupled else coupled_weight_decay(bucket.params, bucket.grads, weight_decay)

        # lr_scaling="rms": the per-tensor factor vbar^(1/2 - alpha) of the denominator (1 for "legacy")
        tensor_factor: Optional[Tensor] = None
        if scaling == "rms" and alpha != 0.5:
            tensor_factor = self._tensor_rms_factor(bucket, grads, bc2, alpha)
        elif scaling == "initial" and alpha != 0.5:
            tensor_factor = self._reference_second_moment(index).to(bc2.dtype).pow(0.5 - alpha).expand(bc2.shape)
        if group["padam_compat"]:
            # x -= lr * m / ((sqrt(v) + eps)^(2 alpha) * bc1 / sqrt(bc2))
            denominator_scale = (bc1 / bc2.sqrt()).unbind(0)
            denominator_shift = None
        elif alpha == 0.0:
            # vhat^0 = 1: x -= lr / (bc1 (factor + eps)) * m, factor = sqrt(vbar) ("rms") or 1 ("legacy")
            factor = 1.0 if tensor_factor is None else tensor_factor
            denominator_scale = (-lr / (bc1 * (factor + eps))).unbind(0)
            denominator_shift = None
        else:
            # lr * (m / bc1) / (v^a / bc2^a * factor + eps) == lr * m / (v^a * bc1 * factor / bc2^a + eps * bc1):
            # the bias corrections and the per-tensor factor fold into the one denominator pass that has
            # to exist anyway.
            scale = bc1 / bc2.pow(alpha)
            if tensor_factor is not None:
                scale = scale * tensor_factor
            denominator_scale = scale.unbind(0)
            denominator_shift = (eps * bc1).unbind(0)

        moments = [bucket.state["exp_avg"], bucket.state["exp_avg_sq"]]
        if denominator_shift is not None and lr != 0.0 and native.usable(bucket.params, bucket.grads, *moments):
            # one fused pass: decay, moments and update (the L2 term is added inside)
            native.smes_step(
                bucket.grads, *moments, bucket.params, [float(v) for v in denominator_scale],
                [float(v) for v in denominator_shift], beta1, beta2, lr, 1.0 - lr * weight_decay if decoupled else 1.0,
                0.0 if decoupled else weight_decay, alpha,
            )
            return
        if decoupled:
            decoupled_weight_decay_(bucket.params, 1.0 - lr * weight_decay)
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
            if alpha == 0.0 and not group["padam_compat"]:  # the per-tensor factor is in the scale
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
