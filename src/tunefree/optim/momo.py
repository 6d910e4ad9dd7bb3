r"""MoMo and MoMo-Adam: momentum models for adaptive learning rates (Schaipp et al., ICML 2024).

Both keep exponential moving averages (EMAs) of the sampled losses ``f_k``, gradients ``g_k`` and products
``<g_k, x_k>``, which together form a model of the loss

.. math::  m_k(y) = \bar f_k + \langle d_k, y \rangle - \gamma_k ,

truncate it below at a lower bound ``f*`` and take the proximal step on it. The step has a closed form: move
along the momentum direction with the Polyak-type step size

.. math::  \tau_k = \min\Big(\frac{\alpha_k}{\rho_k},\;
           \frac{\big(c(\bar f_k - \rho_k f^*) + \langle d_k, x_k\rangle - c\,\gamma_k\big)_+}{\|d_k\|^2}\Big),
           \qquad c = 1 + \alpha_k \lambda ,

then divide by ``c`` (the proximal weight decay). ``alpha_k`` is ``lr``: it **caps** the adaptive step, it is
not the step. ``rho_k = 1 - beta^k`` with bias correction, else 1. MoMo-Adam measures the same model in Adam's
diagonal metric ``D_k = sqrt(v_k / (1 - beta2^k)) + eps``: the direction is ``m_k / D_k`` and
``||d||^2`` becomes ``<m_k, m_k / D_k>``.

Implemented from the authors' code (``momo-opt`` 0.1.0), including the online lower-bound estimate
(``estimate_lower_bound``), with these documented choices:

* ``tau = 0`` when the squared direction norm is 0 (the guard of optax; the reference divides by zero).
* Parameters without a gradient are skipped and left out of every sum (the reference MoMo crashes on them).
* ``<g, x>`` is kept as one global EMA instead of one per tensor (identical while every parameter gets a
  gradient at every step; EMAs are linear).
* MoMo-Adam's ``1 - beta2^k`` uses the global step counter (the reference uses a per-parameter counter;
  they differ only for parameters that skip steps).
* ``lr=inf`` is the uncapped method (pure Polyak-type step); it needs ``weight_decay=0``, because the proximal
  factor ``1 + lr * weight_decay`` has no meaning at an infinite cap (refused with a ``ValueError``).
* Several param groups: the sums run over all groups; ``tau``, the lower-bound reset and its update run
  group by group with each group's ``lr`` and ``weight_decay``, in order, as the reference does;
  ``stats["tau"]`` is the first group's step size; ``group_stats[k]`` holds group ``k``'s ``tau``, its
  cap ``tau_cap = lr_k / rho_k`` and the uncapped model step ``tau_polyak`` (``tau = min(tau_cap,
  tau_polyak)``; at ``tau == tau_cap`` the cap binds and the step is plain SGD-M/Adam with lr = cap).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor

from tunefree.optim import native
from tunefree.optim._core import Bucket, Closure, TunefreeOptimizer
from tunefree.optim.elementwise import adam_direction_
from tunefree.optim.kernels import sub_scaled_, sum_of_dots
from tunefree.optim.validation import check_betas, check_range

__all__ = ["MoMo", "MoMoAdam"]

# Below this squared direction norm the Polyak ratio is numerically meaningless: take no step.
_TINY_NORM = 1e-30


class _MoMoFamily(TunefreeOptimizer):
    """The model-based step shared by MoMo and MoMo-Adam; subclasses supply the direction."""

    needs_loss = True
    #: hyperparameter whose (first) EMA factor averages the loss / <g, x> model terms (MoMo: momentum, the
    #: constructor's ``beta``; MoMo-Adam: betas[0])
    _model_beta_key: str
    #: hyperparameters of the one global loss model: every param group must agree on them
    _shared_keys: tuple[str, ...] = ("lower_bound", "estimate_lower_bound")
    _bias_corrected: bool
    infinite_global_keys = frozenset({"lower_bound"})  # lower_bound=-inf: the cap is always active

    def validate_group(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        # lr caps the adaptive step: lr=inf is the uncapped method (see the module docstring)
        group["lr"] = check_range(name, "lr", group["lr"], 0.0, finite=False)
        group["weight_decay"] = check_range(name, "weight_decay", group["weight_decay"], 0.0)
        if math.isinf(group["lr"]) and group["weight_decay"] != 0:
            raise ValueError(
                f"{name}: lr=inf (no cap on the adaptive step) needs weight_decay=0, got "
                f"weight_decay={group['weight_decay']!r}: the proximal factor 1 + lr * weight_decay would be infinite"
            )
        group["lower_bound"] = check_range(
            name, "lower_bound", group["lower_bound"], high=math.inf, high_inclusive=False, finite=False
        )
        self.validate_direction_group(group)
        first = self.param_groups[0]
        for key in (self._model_beta_key, *self._shared_keys):
            if group[key] != first[key]:
                shown = "momentum (beta)" if key == "momentum" else key
                raise ValueError(
                    f"{name}: all param groups must share {shown} (the loss model is global); "
                    f"got {group[key]!r} and {first[key]!r}"
                )

    def validate_direction_group(self, group: dict[str, Any]) -> None:
        """Check the hyperparameters of the direction (beta, or betas and eps)."""
        raise NotImplementedError

    def direction_pass(self, bucket: Bucket, step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Update the bucket's moment buffers; return (<g,x>, <m,x>, ||m||^2 in the metric).

        Runs block by block (:meth:`blocks`): the dot products read each block right after the moment
        update wrote it, while it is in cache."""
        raise NotImplementedError

    def apply_update(self, bucket: Bucket, step: Tensor, tau: Tensor) -> None:
        """x <- (x - tau * direction) / (1 + lr * weight_decay)  (proximal weight decay)."""
        raise NotImplementedError

    @staticmethod
    def proximal_decay_(bucket: Bucket, params: list[Tensor]) -> None:
        lr, weight_decay = bucket.group["lr"], bucket.group["weight_decay"]
        if weight_decay != 0:
            torch._foreach_div_(params, 1.0 + lr * weight_decay)

    def sum_dots(self, dots: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """Add up per-block (<g,x>, <m,x>, ||m||^2) triples (zeros for an empty list)."""
        if not dots:
            device, dtype = self.scalar_device_dtype()
            zero = torch.zeros((), device=device, dtype=dtype)
            return zero, zero, zero
        stacked = torch.stack([torch.stack(triple) for triple in dots]).sum(0)
        return stacked[0], stacked[1], stacked[2]

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        assert loss is not None  # guaranteed by needs_loss
        first_group = self.param_groups[0]
        beta = first_group[self._model_beta_key]
        if isinstance(beta, tuple):
            beta = beta[0]
        step = self.global_scalar("step", 0.0)
        step.add_(1)

        buckets = self.all_buckets()
        partials: list[Tensor] = []
        for bucket in buckets:
            partials += self.direction_pass(bucket, step)
        device, dtype = self.scalar_device_dtype()
        zero = torch.zeros((), device=device, dtype=dtype)
        sums, mean_loss = self.reduce(
            [sum(partials[0::3], zero), sum(partials[1::3], zero), sum(partials[2::3], zero)], loss
        )
        grad_dot_x, dir_dot_x, dir_norm_sq = sums[0], sums[1], sums[2]

        first_step = "loss_avg" not in self.global_state
        loss_avg = self.global_scalar("loss_avg", 0.0)
        grad_dot_x_avg = self.global_scalar("grad_dot_x_avg", 0.0)
        if first_step and not self._bias_corrected:
            # Start the EMAs at their first values (the lerp of two equal values below is exact).
            loss_avg.copy_(mean_loss)
            grad_dot_x_avg.copy_(grad_dot_x)
        loss_avg.lerp_(mean_loss, 1.0 - beta)
        grad_dot_x_avg.lerp_(grad_dot_x, 1.0 - beta)

        rho: Any = 1.0 - beta ** step if self._bias_corrected else 1.0
        lower_bound_init = first_group["lower_bound"]
        lower_bound = self.global_scalar("lower_bound", lower_bound_init)
        estimate = first_group["estimate_lower_bound"]

        taus: list[Tensor] = []
        caps: list[Tensor] = []
        polyaks: list[Tensor] = []
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            c = 1.0 + lr * weight_decay if weight_decay else 1.0  # (lr may be inf: uncapped)
            if estimate:
                # Reset rule: the model value (with decay) fell below the current estimate.
                cap = c * loss_avg + dir_dot_x - c * grad_dot_x_avg
                reset = torch.clamp(cap / (2.0 * c * rho), min=lower_bound_init)
                lower_bound.copy_(torch.where(cap < c * rho * lower_bound, reset, lower_bound))
            numerator = c * (loss_avg - rho * lower_bound) + dir_dot_x - c * grad_dot_x_avg
            safe_norm = torch.where(dir_norm_sq > _TINY_NORM, dir_norm_sq, torch.ones_like(dir_norm_sq))
            polyak = torch.where(dir_norm_sq > _TINY_NORM, numerator.clamp(min=0) / safe_norm, zero)
            cap = lr / rho + zero
            tau = torch.minimum(cap, polyak)
            if estimate:
                model_value = loss_avg + dir_dot_x - grad_dot_x_avg
                lower_bound.copy_(
                    torch.clamp((model_value - 0.5 * tau * dir_norm_sq) / rho, min=lower_bound_init)
                )
            taus.append(tau)
            caps.append(cap)
            polyaks.append(polyak)

        for bucket in buckets:
            tau = taus[bucket.group_index].to(bucket.params[0].dtype)
            self.apply_update(bucket, step, tau)

        self.publish_stats(
            groups=[{"tau": t, "tau_cap": c, "tau_polyak": p} for t, c, p in zip(taus, caps, polyaks)],
            tau=taus[0].clone(),
            lower_bound=lower_bound.clone(),
            loss_avg=loss_avg.clone(),
            step=step.clone(),
        )

    def block_dots(
        self, grads: list[Tensor], params: list[Tensor], moment: list[Tensor],
        metric_direction: Optional[list[Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(<g,x>, <m,x>, <m,u>) over one block, accumulated in the scalar dtype; ``metric_direction=None``
        is the Euclidean metric (u = m)."""
        _, dtype = self.scalar_device_dtype()
        return (sum_of_dots(grads, params, dtype), sum_of_dots(moment, params, dtype),
                sum_of_dots(moment, metric_direction, dtype))


class MoMo(_MoMoFamily):
    r"""MoMo: SGD with (EMA) momentum and a model-based adaptive step size.

    Update per step ``k`` (``d`` = EMA of gradients, one buffer like SGD-momentum)::

        d_k = beta d_{k-1} + (1 - beta) g_k
        tau_k = min(lr / rho_k, (c (fbar_k - rho_k f*) + <d_k, x_k> - c gamma_k)_+ / ||d_k||^2)
        x_{k+1} = (x_k - tau_k d_k) / c,      c = 1 + lr * weight_decay

    With ``lower_bound=-inf`` the cap is always active and MoMo is exactly
    ``torch.optim.SGD(lr, momentum=beta, dampening=beta)``.

    Args:
        params: parameters or param groups.
        lr: cap on the adaptive step size (default 1.0, the authors' recommendation). LR schedulers scale
            the cap. ``lr=inf``: no cap (needs ``weight_decay=0``).
        beta: EMA factor of losses, gradients and ``<g, x>`` (default 0.9). It is stored in the param
            groups as ``"momentum"``, the key torch's momentum-cycling schedulers (``OneCycleLR``,
            ``CyclicLR(cycle_momentum=True)``) use; a group or an old checkpoint with ``"beta"`` still works.
        weight_decay: proximal weight decay ``lambda`` (do not also add an L2 term to the loss).
        lower_bound: a lower bound ``f*`` of the loss (0 for most losses; set a known floor otherwise).
        estimate_lower_bound: estimate ``f*`` online, starting from (and never below) ``lower_bound``.
        bias_correction: start the EMAs at zero and use ``rho_k = 1 - beta^k`` (default: start them at the
            first values, ``rho_k = 1``). Global: every param group must agree (else ``ValueError``).
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    The mini-batch loss is required at every step: ``step(closure)``, ``step(loss=loss)`` or
    ``observe_loss(loss)`` + ``step()``. ``stats``: ``tau`` (step size taken), ``lower_bound``,
    ``loss_avg``, ``step``; ``group_stats[k]``: ``tau``, ``tau_cap`` and ``tau_polyak`` of param group ``k``.
    """

    _model_beta_key = "momentum"
    _shared_keys = ("lower_bound", "estimate_lower_bound", "bias_correction")
    legacy_group_keys = {"beta": "momentum"}

    @property
    def _bias_corrected(self) -> bool:  # type: ignore[override]
        return bool(self.param_groups[0]["bias_correction"])

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        beta: float = 0.9,
        weight_decay: float = 0.0,
        lower_bound: float = 0.0,
        estimate_lower_bound: bool = False,
        bias_correction: bool = False,
        *,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, momentum=beta, weight_decay=weight_decay, lower_bound=lower_bound,
            estimate_lower_bound=bool(estimate_lower_bound), bias_correction=bool(bias_correction),
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]

    def validate_direction_group(self, group: dict[str, Any]) -> None:
        group["momentum"] = check_range("MoMo", "momentum (beta)", group["momentum"], 0.0, 1.0, high_inclusive=False)

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        # First-value start: d_0 = g_1 makes the first EMA update return g_1 exactly.
        start = torch.zeros_like(param) if group["bias_correction"] else grad.clone()
        return {"momentum": start}

    def direction_pass(self, bucket: Bucket, step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if native.usable(bucket.params, bucket.grads, bucket.state["momentum"]):
            sums = native.momo_direction(
                bucket.grads, bucket.state["momentum"], bucket.params, 1.0 - bucket.group["momentum"]
            )
            device, dtype = self.scalar_device_dtype()
            return tuple(torch.tensor(value, device=device, dtype=dtype) for value in sums)  # type: ignore[return-value]
        dots = []
        for (params, grads, momentum), _ in self.blocks([bucket.params, bucket.grads, bucket.state["momentum"]]):
            torch._foreach_lerp_(momentum, grads, 1.0 - bucket.group["momentum"])
            dots.append(self.block_dots(grads, params, momentum, None))
        return self.sum_dots(dots)

    def apply_update(self, bucket: Bucket, step: Tensor, tau: Tensor) -> None:
        if native.usable(bucket.params, bucket.state["momentum"]):
            lr, weight_decay = bucket.group["lr"], bucket.group["weight_decay"]
            native.momo_apply(bucket.state["momentum"], bucket.params, float(tau),
                              1.0 + lr * weight_decay if weight_decay != 0 else 1.0)
            return
        for (params, momentum), _ in self.blocks([bucket.params, bucket.state["momentum"]]):
            sub_scaled_(params, momentum, tau)
            self.proximal_decay_(bucket, params)


class MoMoAdam(_MoMoFamily):
    r"""MoMo-Adam: Adam's preconditioner with a model-based adaptive step size.

    Update per step ``k`` (``m``, ``v`` as in Adam, started at zero)::

        D_k = sqrt(v_k / (1 - beta2^k)) + eps,       rho_k = 1 - beta1^k
        tau_k = min(lr / rho_k, (c (fbar_k - rho_k f*) + <m_k, x_k> - c gamma_k)_+ / <m_k, m_k / D_k>)
        x_{k+1} = (x_k - tau_k m_k / D_k) / c                 (proximal decay, default)
        x_{k+1} = (1 - lr * weight_decay) x_k - tau_k m_k / D_k  (decoupled_weight_decay=True)

    With ``lower_bound=-inf`` it is exactly ``torch.optim.Adam(lr, betas, eps)``.

    Args:
        lr: cap on the adaptive step size (default 1e-2).
        betas: Adam's EMA factors; ``beta1`` also averages the loss model terms.
        eps: added to ``sqrt(vhat)`` (outside the square root, as in Adam).
        weight_decay: ``lambda``; proximal by default (the paper), AdamW-style with
            ``decoupled_weight_decay=True`` (``tau`` is still computed with ``c = 1 + lr*lambda``, as in the
            reference code).
        lower_bound, estimate_lower_bound, nonfinite, process_group: as in :class:`MoMo`.
    """

    _model_beta_key = "betas"
    _bias_corrected = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        lower_bound: float = 0.0,
        estimate_lower_bound: bool = False,
        decoupled_weight_decay: bool = False,
        *,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, lower_bound=lower_bound,
            estimate_lower_bound=bool(estimate_lower_bound), decoupled_weight_decay=bool(decoupled_weight_decay),
        )
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]

    def validate_direction_group(self, group: dict[str, Any]) -> None:
        group["betas"] = check_betas("MoMoAdam", group["betas"])
        group["eps"] = check_range("MoMoAdam", "eps", group["eps"], 0.0)

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}

    @staticmethod
    def _bias_correction2_sqrt(bucket: Bucket, step: Tensor) -> Tensor:
        return torch.sqrt(1.0 - bucket.group["betas"][1] ** step).to(bucket.params[0].dtype)

    def direction_pass(self, bucket: Bucket, step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        beta1, beta2 = bucket.group["betas"]
        lists = [bucket.params, bucket.grads, bucket.state["exp_avg"], bucket.state["exp_avg_sq"]]
        bias_correction2_sqrt = self._bias_correction2_sqrt(bucket, step)
        if native.usable(*lists):
            sums = native.momo_adam_direction(
                bucket.grads, bucket.state["exp_avg"], bucket.state["exp_avg_sq"], bucket.params, beta1, beta2,
                float(bias_correction2_sqrt), bucket.group["eps"],
            )
            device, dtype = self.scalar_device_dtype()
            return tuple(torch.tensor(value, device=device, dtype=dtype) for value in sums)  # type: ignore[return-value]
        dots = []
        for (params, grads, exp_avg, exp_avg_sq), (direction,) in self.blocks(lists, scratch=(None,)):
            torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
            adam_direction_(exp_avg, exp_avg_sq, bias_correction2_sqrt, bucket.group["eps"], direction)
            dots.append(self.block_dots(grads, params, exp_avg, direction))
        return self.sum_dots(dots)

    def apply_update(self, bucket: Bucket, step: Tensor, tau: Tensor) -> None:
        group = bucket.group
        decoupled = group["decoupled_weight_decay"] and group["weight_decay"] != 0
        lists = [bucket.params, bucket.state["exp_avg"], bucket.state["exp_avg_sq"]]
        bias_correction2_sqrt = self._bias_correction2_sqrt(bucket, step)
        if native.usable(*lists):
            lr, weight_decay = group["lr"], group["weight_decay"]
            native.momo_adam_apply(
                bucket.state["exp_avg"], bucket.state["exp_avg_sq"], bucket.params, float(bias_correction2_sqrt),
                group["eps"], float(tau), 1.0 - lr * weight_decay if decoupled else 1.0,
                1.0 + lr * weight_decay if (weight_decay != 0 and not decoupled) else 1.0,
            )
            return
        for (params, exp_avg, exp_avg_sq), (direction,) in self.blocks(lists, scratch=(None,)):
            adam_direction_(exp_avg, exp_avg_sq, bias_correction2_sqrt, bucket.group["eps"], direction)
            if decoupled:
                torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])
            sub_scaled_(params, direction, tau)
            if not decoupled:
                self.proximal_decay_(bucket, params)
