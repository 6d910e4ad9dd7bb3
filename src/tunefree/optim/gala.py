r"""GALA: the learning rate chosen online by gradient alignment and FTRL (Jiang, Kavis, Mokhtari, 2025).

Choosing a global learning rate ``eta`` is cast as 1-D online learning. After the step
``x_t = x_{t-1} - eta_{t-1} u_{t-1}`` the optimizer sees the surrogate loss

.. math::  \ell_t(\eta) = -\eta\, a_t + \tfrac{\eta^2}{2} b_t, \qquad
           a_t = \langle g_t, u_{t-1} \rangle, \qquad
           b_t = L_t \|u_{t-1}\|^2, \qquad
           L_t = \frac{\|g_t - \hat g_t\|}{\|x_t - x_{t-1}\|}

(when ``x_t = x_{t-1}``, i.e. after a step at ``eta = 0``, ``L_t`` is the last measured curvature, 0 before
any), where ``g_t = grad f(x_t; xi_t)`` and
``ghat_t = grad f(x_{t-1}; xi_t)`` are two gradients **on the same mini-batch** ``xi_t``. Follow-the-
Regularized-Leader with the regulariser ``(delta/2)(eta - eta_0)^2`` has the closed form

.. math::  A_t = \sum_{s \le t} a_s, \quad B_t = \sum_{s \le t} b_s, \quad
           \eta_t = \mathrm{clip}_{[\eta_{min}, \eta_{max}]}\Big(\frac{\delta \eta_0 + A_t}{\delta + B_t}\Big)

(``eta_t = eta_{t-1}`` while ``delta + B_t = 0``; ``eta_1 = clip(eta_0)``). The base optimizer then steps
with learning rate ``eta_t``. This is the form tunefree implements (call it the closure form; it
generalises the third-party "reading A": the extra gradient is taken at the *previous parameters on the
current batch*, which is what a standard torch closure can do). The paper's own practical
algorithm could not be read; the following choices are **UNVERIFIED** against it:

* **reading**: the closure form above, not "reading B" (current parameters on the previous batch), which needs the
  previous batch and so cannot be driven by a torch closure.
* **per-base defaults** (measured, docs/optimizers-defaults.md): ``base="sgd"`` defaults to
  ``alignment="start", curvature="rayleigh", lr_growth=1.5``; ``base="adam"`` keeps the paper form
  (``"direction"``, ``"norm"``, unbounded), which measured better with Adam on the fast benchmark tasks.
* **alignment** (option): ``"start"`` (SGD default, tunefree's choice) is ``a_t = <ghat_t, u_{t-1}>``,
  the gradient at the *start* ``x_{t-1}`` of the step just taken (on the current batch), i.e. the point
  ``s = 0`` of the segment the paper's theory draws the alignment point from. ``"direction"`` (the default
  before 0.2) is the closure form, ``a_t = <g_t, u_{t-1}>`` at the end point ``x_t``: for a quadratic
  ``<g_t, u> = <g_{t-1}, u> - eta_{t-1} u^T H u``, so the step's own curvature term is already inside ``a``
  and is charged again by ``b``; the fixed point of ``A / B`` is then half the line-search rate. With
  ``"start"`` the surrogate is exactly the quadratic model of the step, ``A / B`` its line search.
  ``"same_batch"``
  (SGD base only) is "reading A" in this closure form: ``a_t = <g_t, ghat_t>``, both gradients on
  ``xi_t``, so the mini-batch noise of different batches is never paired; ``L_t`` unchanged and
  ``b_t = L_t ||u_{t-1}||^2`` with ``u`` the momentum buffer. Reading A writes ``||g_{t-1}||^2``; that is the
  same for momentum 0 (``buf = g``), but with momentum the parameters moved by ``eta buf`` with
  ``buf ~ g / (1 - momentum)``, and the quadratic term must be that of the step actually taken: with
  ``||g_{t-1}||^2`` it is too small by up to ``(1 - momentum)^2`` and ``eta`` overshoots (measured on the
  docs/gala-measurements.md). Refused with Adam: ``<g, ghat>`` has units of gradient^2 while Adam's ``u``
  has none.
* **curvature** (option): ``"rayleigh"`` (default since 0.2, tunefree's choice) is the secant curvature
  along the step, ``L_t = <g_t - ghat_t, x_t - x_{t-1}> / ||x_t - x_{t-1}||^2`` (for a quadratic exactly
  the Rayleigh quotient ``u^T H u / ||u||^2`` that the surrogate's quadratic term needs), falling back to
  the norm estimate where it is ``<= 0``. ``"norm"`` (before 0.2) is the spec's
  ``||g_t - ghat_t|| / ||x_t - x_{t-1}||`` = ``||H u|| / ||u||``, which exceeds the Rayleigh quotient by
  ``1 / cos(H u, u)``: measured on the benchmark's MNIST-1D MLP this made the rate settle 150x below the
  best fixed rate (0.00065 vs 0.1) even with ``"start"``.
* **surrogate** (option): ``"sum"`` (default, the paper's FTRL) or ``"normalised"`` (tunefree's, each
  step's surrogate divided by ``||u_{t-1}||^2``, so ``A += a_t / ||u||^2``, ``B += L_t``: every step weighs
  the same instead of the steps with large directions). Measured worse on the benchmark's MLP tasks
  (docs/optimizers-defaults.md), kept as an option.
* **lr_growth** (option, default 1.5 with the SGD base): ``eta_t <= lr_growth * eta_{t-1}`` (not from
  ``eta_{t-1} = 0``), a guard of tunefree's: the first feedbacks come from small steps, whose secant sees
  only a small neighbourhood, and one over-large estimate used to blow the loss up early (measured: dlrm_ctr,
  Adam base, 0.001 -> 0.154 at step 2, loss 96x; ddpm_2d, SGD base: 0.1 -> 1.7 in 9 steps). 1.5 rather
  than 2 (the unreleased 0.2 development default): with 2, ``ddpm_2d`` still spiked above the harness's
  divergence threshold in its first steps; with 1.5 it scores 0.98, and any rate is still reached within
  ``log(ratio) / log(1.5)`` steps (1e-5 -> 0.1: 23 steps).
* A state_dict saved before these options existed resumes with the math it was trained with
  (``"direction"``, ``"norm"``, ``"sum"``, unbounded growth).
* **regulariser**: ``(delta/2)(eta - eta_0)^2``, default ``delta = 0`` (pure data from step 2 on; the
  initial learning rate is forgotten after the first feedback). ``delta`` has the units of ``b``
  (curvature x squared direction), so no scale-free default exists.
* **the eta used at step t** already includes the feedback ``a_t, b_t`` measured at ``x_t`` (it is known
  before the step is taken).
* **lower clip** ``lr_min = 0`` (as in the theory); ``lr_max = inf`` (the practical version drops it).
* **an unmoved step reuses the last curvature** (a deliberate deviation from the plain
  reading ``L_t = 0`` when ``dx = 0``; the paper leaves 0/0 open). After a step at ``eta = 0`` the alignment
  still counts in full (so ``eta`` can leave 0, as intended) but ``L_t = 0`` would make ``b_t = 0``, and the
  step back would be ``A / B`` with a ``B`` that never saw the current region; measured in
  docs/gala-measurements.md.
* **weight decay is decoupled** for both bases (``x <- (1 - lr wd) x - lr u``), also for SGD, whose torch
  convention couples it into the gradient: then ``g``, ``ghat`` and ``u`` are pure loss quantities and the
  alignment does not see the regulariser, while ``||x_t - x_{t-1}||`` is still the true distance moved.
* **no user schedule**: GALA owns the learning rate. ``group["lr"]`` is ``eta_0`` (read at the first step,
  and as the FTRL centre when ``delta > 0``); an LR scheduler that changes it changes only that, not the
  step size GALA adapts. Combine a warm-up/decay with GALA outside the optimizer if needed.

Implementation notes:

* ``u_{t-1}`` is **not** derived from ``dx / eta_{t-1}`` (undefined at ``eta = 0``, and wrong with weight
  decay): for SGD-momentum it is the momentum buffer itself, read before its next update (torch's convention
  ``buf = momentum * buf + g``, ``u = buf``); for Adam it is recomputed from the stored moments with the
  previous step's bias corrections, ``mhat / (sqrt(vhat) + eps)``. No extra buffer either way; at ``eta = 0``
  the alignment ``<g_t, u_{t-1}>`` still moves ``A``, so the method can leave ``eta = 0`` again (with
  ``alignment="same_batch"``, ``ghat_t = g_t`` there and ``a_t = ||g_t||^2 > 0``).
* **param groups**: one global ``eta``; group ``k`` steps with ``eta * lr_k / lr_0`` (its ``lr`` ratio to
  the first group), and ``u`` of group ``k`` is scaled by the same ratio inside ``a`` and ``b`` so that the
  surrogate is exactly the loss of the step actually taken. ``base``, ``delta``, ``lr_min``, ``lr_max`` are
  global and must agree across groups.
* **state**: per parameter ``prev_param`` (``x_{t-1}``) plus the base buffers (``momentum_buffer`` or
  ``exp_avg``/``exp_avg_sq``); global ``step``, ``A``, ``B``, ``eta``, ``dropped_feedback``. Adam's bias
  corrections use the global step counter (torch counts per parameter; they differ only for parameters
  that skip steps).
* **the second evaluation**: the core checks the first closure evaluation (``nonfinite`` policy). A
  non-finite second evaluation (loss or ``ghat``) must not poison ``A``/``B``: its feedback is dropped
  (``a_t = b_t = 0``, ``eta`` unchanged), branch-free and without a host sync, under every ``nonfinite``
  policy; the base step from the (finite) ``g_t`` still happens. ``stats["dropped_feedback"]`` counts them.
* **side effects of the extra pass**: the global RNG (CPU, and CUDA when initialised) is rewound to its
  state before the first closure call, so dropout draws the same masks in both passes, and set back
  afterwards, so the training's random stream is as if the closure ran once (``replay_rng=True``).
  BatchNorm running statistics can only be protected when the optimizer knows the model:
  ``GALA(..., model=model)`` or ``opt.attach(model)`` snapshots the running statistics (and
  ``num_batches_tracked``) of its normalisation layers (or all buffers, ``buffers="all"``) before the
  extra pass and restores them after. **Without a model, every BatchNorm layer updates its running
  statistics twice per step**, the second time at the previous parameters.
* The extra pass sets every ``.grad`` to ``None``, calls the closure, takes the new gradients as ``ghat``
  and puts the original gradient tensors back, so ``g_t`` is never copied. The closure must compute the
  gradient afresh (``zero_grad()`` then ``backward()``), as every torch closure does.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from tunefree.optim import checkpoint
from tunefree.optim._core import Bucket, Closure, LossLike, TunefreeOptimizer
from tunefree.optim.elementwise import adam_direction_
from tunefree.optim.kernels import as_real, dot, sub_scaled_
from tunefree.optim.validation import check_betas, check_range

__all__ = ["GALA"]

Base = Literal["sgd", "adam"]
Alignment = Literal["direction", "same_batch", "start"]
Surrogate = Literal["sum", "normalised"]
Curvature = Literal["norm", "rayleigh"]
#: the measured default of each base for the options left None (docs/optimizers-defaults.md): SGD-momentum gains
#: from the start alignment, the secant curvature and a growth bound of 1.5 per step; the Adam base measured better
#: in the paper form
_BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"alignment": "start", "curvature": "rayleigh", "lr_growth": 1.5},
    "adam": {"alignment": "direction", "curvature": "norm", "lr_growth": math.inf},
}
#: hyperparameters that describe the one global learning rate: they must agree across param groups
_GLOBAL_KEYS = ("base", "alignment", "surrogate", "curvature", "delta", "lr_min", "lr_max", "lr_growth")
#: hyperparameters that only one base uses: the param groups of the other base do not carry them, so that
#: torch's momentum-cycling schedulers cycle the key the base reads ("momentum" for SGD, "betas" for Adam)
_BASE_ONLY_KEYS = {"sgd": ("betas", "eps"), "adam": ("momentum",)}


class GALA(TunefreeOptimizer):
    r"""GALA: SGD-momentum or Adam whose learning rate is adapted online by gradient alignment + FTRL.

    Per step ``t`` (see the module docstring for the math and the UNVERIFIED choices)::

        g_t    = grad f(x_t; xi_t)                        # the closure, first call (by step())
        ghat_t = grad f(x_{t-1}; xi_t)                    # t >= 2: the closure again, at stored x_{t-1}
        a_t = <g_t, u_{t-1}>                              # alignment="same_batch": a_t = <g_t, ghat_t>
        L_t = ||g_t - ghat_t|| / ||x_t - x_{t-1}||,  b_t = L_t ||u_{t-1}||^2
        A += a_t,  B += b_t,   eta_t = clip((delta eta_0 + A) / (delta + B), lr_min, lr_max)
        sgd:  buf = momentum buf + g_t,  u_t = buf
        adam: m, v as in Adam,           u_t = mhat / (sqrt(vhat) + eps)
        x_{t+1} = (1 - eta_t wd) x_t - eta_t u_t          # per group: eta_t * lr_k / lr_0

    Args:
        params: parameters or param groups.
        lr: the initial learning rate ``eta_0`` (default 0.1; use about 1e-3 with ``base="adam"``). GALA
            adapts the rate from the second step on; ``lr`` of further groups sets their ratio to the first.
        base: ``"sgd"`` (heavy-ball momentum, torch's convention) or ``"adam"``.
        momentum: SGD momentum factor in [0, 1) (``base="sgd"``).
        betas, eps: Adam's EMA factors and denominator constant (``base="adam"``).

            Param groups carry only their base's keys (``momentum``, or ``betas`` and ``eps``), so
            ``OneCycleLR`` / ``CyclicLR(cycle_momentum=True)`` cycle the factor the base actually uses; a
            group that sets the other base's key is refused (``ValueError``).
        weight_decay: decoupled weight decay (``x *= 1 - lr * weight_decay``), kept out of the alignment.
        delta: FTRL regularisation weight (>= 0) pulling ``eta`` towards ``eta_0``; 0 = pure data.
        lr_min, lr_max: clip of the adapted learning rate (``0 <= lr_min <= lr_max``).
        alignment: ``"start"`` (default with ``base="sgd"``: ``a_t = <ghat_t, u_{t-1}>``, any base),
            ``"direction"`` (default with ``base="adam"``; the paper form, the closure form:
            ``a_t = <g_t, u_{t-1}>``, any base) or ``"same_batch"`` (reading
            A: ``a_t = <g_t, ghat_t>``; ``base="sgd"`` only, a ``ValueError`` with Adam).
        surrogate: ``"sum"`` (default, FTRL on the surrogates as they are) or ``"normalised"`` (each step's
            surrogate divided by ``||u_{t-1}||^2``).
        lr_growth: the adapted rate grows at most by this factor per step (>= 1; tunefree's guard;
            ``math.inf`` is the paper's unbounded FTRL). Default (None): 1.5 with ``base="sgd"``, inf with
            Adam. From ``eta = 0`` the next rate is not bounded.
        curvature: ``"rayleigh"`` (default with ``base="sgd"``, secant ``<g_t - ghat_t, dx> / ||dx||^2``,
            the norm estimate where that is <= 0) or ``"norm"`` (default with ``base="adam"``, the spec's
            ``||g_t - ghat_t|| / ||dx||``).

            Measured with the paper form (``alignment="direction", curvature="norm"``; tests/optim/
            test_gala.py: 300 steps, starts 1e-5..1, final lr / final loss relative to the best fixed-lr
            SGD run with the same momentum). Mini-batch MLP, batches cycled in order: the SGD base collapses
            to lr 0 (consecutive batches' noise is anti-correlated, so ``<g_t, u_{t-1}>`` sums negative;
            10-21x); ``"same_batch"`` settles near the best fixed rate from every start <= 0.1. Full-batch
            quadratic (condition number 1000): about half the best rate (momentum 0: lr 0.82 vs 1.78, loss
            3.4-3.9x). The defaults (``"start"`` + ``"rayleigh"``): plain SGD on the quadratic meets "every
            start within 3x, loss within 2x of the best fixed-lr run" (lr 1.43-1.59 vs 1.78, loss 1.3-1.8x);
            SGD-M on the MLP settles at lr 0.022-0.031 (best fixed 0.032) from every start <= 0.1 with a loss
            1.0-2.5x the tuned one (start 1: lr 0.0024, about 2000x); on the benchmark tasks see
            docs/optimizers-defaults.md. A too-large start still costs: the first step is taken un-adapted.
        model: the module trained, so that the extra pass can restore its BatchNorm statistics (see
            :meth:`attach`).
        buffers: which buffers of ``model`` are restored: ``"norm"`` (running statistics of normalisation
            layers, default) or ``"all"``.
        replay_rng: rewind the global RNG for the extra pass (same dropout masks in both passes) and
            restore it afterwards (default True).
        nonfinite, process_group: see :class:`~tunefree.optim._core.TunefreeOptimizer`.

    ``step(closure)`` is required and calls the closure **twice** from the second step on.
    ``stats``: ``lr`` (the learning rate of this step, first group), ``alignment`` (``a_t``),
    ``curvature`` (``L_t``), ``A``, ``B``, ``step``, ``dropped_feedback``; ``group_stats[k]["lr"]``: the
    learning rate group ``k`` stepped with (``eta * lr_k / lr_0``).
    """

    # checkpoints from before the options ran the paper form
    legacy_group_values = {"alignment": "direction", "surrogate": "sum", "curvature": "norm", "lr_growth": math.inf}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        base: Base = "sgd",
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.0,
        lr_min: float = 0.0,
        lr_max: float = math.inf,
        alignment: Optional[Alignment] = None,
        surrogate: Surrogate = "sum",
        curvature: Optional[Curvature] = None,
        lr_growth: Optional[float] = None,
        *,
        model: Optional[nn.Module] = None,
        buffers: Literal["norm", "all"] = "norm",
        replay_rng: bool = True,
        nonfinite: str = "raise",
        process_group: Any = "auto",
    ) -> None:
        per_base = _BASE_DEFAULTS["sgd" if base == "sgd" else "adam"]  # an unknown base fails in validate_group
        alignment = alignment if alignment is not None else per_base["alignment"]
        curvature = curvature if curvature is not None else per_base["curvature"]
        lr_growth = lr_growth if lr_growth is not None else per_base["lr_growth"]
        defaults = dict(
            lr=lr, base=base, momentum=momentum, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
            eps=eps, weight_decay=weight_decay, delta=delta, lr_min=lr_min, lr_max=lr_max, alignment=alignment,
            surrogate=surrogate, curvature=curvature, lr_growth=lr_growth,
        )
        # The constructor's values of both bases are checked (a typo fails even where the base ignores it);
        # the groups then carry only the keys of their base.
        self._check_base_hyperparameters(defaults)
        for key in _BASE_ONLY_KEYS.get(base, ()):
            del defaults[key]
        super().__init__(params, defaults, nonfinite=nonfinite, process_group=process_group)  # type: ignore[arg-type]
        self.replay_rng = bool(replay_rng)
        self._model: Optional[nn.Module] = None
        self._buffer_kind: str = "norm"
        self._rng_before: Optional[tuple[Tensor, Optional[list[Tensor]]]] = None
        if model is not None or buffers != "norm":
            self.attach(model, buffers=buffers)

    # ------------------------------------------------------------------ validation
    def validate_group(self, group: dict[str, Any]) -> None:
        name = "GALA"
        group["lr"] = check_range(
            name, "lr", group["lr"], 0.0, low_inclusive=False, high=math.inf, high_inclusive=False
        )
        if group["base"] not in ("sgd", "adam"):
            raise ValueError(f"{name}: base must be 'sgd' or 'adam', got {group['base']!r}")
        if group["base"] != self.defaults["base"]:
            raise ValueError(
                f"{name}: base is global; pass it to the constructor, GALA(..., base={group['base']!r}), not in a "
                f"param group (got {group['base']!r} in a group of a base={self.defaults['base']!r} optimizer)"
            )
        for key in _BASE_ONLY_KEYS[group["base"]]:
            if key in group:
                raise ValueError(
                    f"{name}: {key} has no effect with base={group['base']!r} (it belongs to the other base); "
                    f"remove it from the param group"
                )
        per_base = _BASE_DEFAULTS[group["base"]]
        alignment = group.setdefault("alignment", per_base["alignment"])
        if alignment not in ("direction", "same_batch", "start"):
            raise ValueError(f"{name}: alignment must be 'direction', 'same_batch' or 'start', got {alignment!r}")
        surrogate = group.setdefault("surrogate", "sum")
        if surrogate not in ("sum", "normalised"):
            raise ValueError(f"{name}: surrogate must be 'sum' or 'normalised', got {surrogate!r}")
        curvature = group.setdefault("curvature", per_base["curvature"])
        if curvature not in ("norm", "rayleigh"):
            raise ValueError(f"{name}: curvature must be 'norm' or 'rayleigh', got {curvature!r}")
        if alignment == "same_batch" and group["base"] == "adam":
            raise ValueError(
                f"{name}: alignment='same_batch' needs base='sgd': its alignment <g_t, ghat_t> has the units of "
                f"gradient^2, while Adam's direction mhat / (sqrt(vhat) + eps) (which sets the curvature term "
                f"L ||u||^2) has none, so the ratio is not a learning rate; use alignment='start' or 'direction' "
                f"with Adam"
            )
        self._check_base_hyperparameters(group)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "delta", group["delta"], 0.0, high=math.inf, high_inclusive=False)
        lr_min = check_range(name, "lr_min", group["lr_min"], 0.0, high=math.inf, high_inclusive=False)
        check_range(name, "lr_max", group["lr_max"], lr_min, low_inclusive=True, finite=False)
        group.setdefault("lr_growth", per_base["lr_growth"])
        check_range(name, "lr_growth", group["lr_growth"], 1.0, low_inclusive=True, finite=False)
        if group["lr_max"] <= 0:
            raise ValueError(f"{name}: lr_max must be > 0, got {group['lr_max']!r}")
        first = self.param_groups[0]
        for key in _GLOBAL_KEYS:
            if group[key] != first[key]:
                raise ValueError(
                    f"{name}: all param groups must share {key} (GALA adapts one global learning rate); "
                    f"got {group[key]!r} and {first[key]!r}"
                )

    @staticmethod
    def _check_base_hyperparameters(values: dict[str, Any]) -> None:
        """Check the base optimizer's hyperparameters present in ``values`` (momentum, betas, eps)."""
        if "momentum" in values:
            check_range("GALA", "momentum", values["momentum"], 0.0, 1.0, high_inclusive=False)
        if "betas" in values:
            values["betas"] = check_betas("GALA", values["betas"])
        if "eps" in values:
            check_range("GALA", "eps", values["eps"], 0.0)

    def join_zero_redundancy(self, zero: Any) -> None:
        """Refused: GALA's extra pass moves *every* parameter back to its previous point and re-evaluates
        the closure, but inside ZeroRedundancyOptimizer each rank's GALA holds (and can move) only its own
        partition, so the curvature estimate, and with it the learning rate, would be wrong."""
        raise ValueError(
            "GALA cannot run inside torch.distributed.optim.ZeroRedundancyOptimizer: its second closure "
            "evaluation needs every parameter at its previous point, but each rank's GALA holds only its "
            "partition of the parameters. Use GALA with DDP or FSDP2 (fully_shard), which it supports."
        )

    # ------------------------------------------------------------------ model / RNG side effects
    def attach(self, model: Optional[nn.Module], buffers: Literal["norm", "all"] = "norm") -> "GALA":
        """Let the extra pass restore ``model``'s buffers (BatchNorm running statistics) afterwards.

        ``buffers="norm"`` snapshots the buffers of normalisation layers that track running statistics
        (BatchNorm*, SyncBatchNorm, InstanceNorm with ``track_running_stats``); ``"all"`` every buffer
        of the model (for custom layers with forward side effects). ``attach(None)`` detaches.
        Returns the optimizer, so ``opt = GALA(...).attach(model)`` works.
        """
        if buffers not in ("norm", "all"):
            raise ValueError(f"GALA: buffers must be 'norm' or 'all', got {buffers!r}")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"GALA: model must be a torch.nn.Module, got {type(model).__name__}")
        self._model, self._buffer_kind = model, buffers
        return self

    def _protected_buffers(self) -> list[Tensor]:
        if self._model is None:
            return []
        if self._buffer_kind == "all":
            return list(self._model.buffers())
        found: list[Tensor] = []
        for module in self._model.modules():
            # _NormBase is the common base of BatchNorm*, SyncBatchNorm and InstanceNorm*.
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                found += [b for b in module.buffers(recurse=False) if b is not None]
        return found

    @staticmethod
    def _get_rng() -> tuple[Tensor, Optional[list[Tensor]]]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return torch.get_rng_state(), cuda

    @staticmethod
    def _set_rng(state: tuple[Tensor, Optional[list[Tensor]]]) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    # ------------------------------------------------------------------ step
    def step(self, closure: Optional[Closure] = None, *, loss: Optional[LossLike] = None) -> Optional[LossLike]:  # type: ignore[override]
        """One GALA step; ``closure`` (re-evaluates the current batch, calls ``backward()``) is required.

        From the second step on the closure is called twice: at the current parameters (the gradient
        the base optimizer steps with) and at the previous parameters on the same batch (the curvature
        estimate that sets the learning rate). Returns the first call's loss.
        """
        if closure is None:
            if checkpoint.handle_state_initialising_step(self, closure, loss):
                return None  # torch.distributed.checkpoint's state-initialising call (creates the state only)
            raise ValueError(
                "GALA.step needs a closure: optimizer.step(closure) where closure() zeroes the gradients, "
                "evaluates the current mini-batch, calls backward() and returns the loss. GALA calls it "
                "twice per step (from the second step on): once at the current parameters and once at the "
                "previous parameters on the same batch, to measure how the gradient changed along the last "
                "step; a loss or gradients computed outside step() cannot give it that second gradient."
            )
        self._rng_before = self._get_rng() if self.replay_rng else None
        try:
            return super().step(closure, loss=loss)
        finally:
            self._rng_before = None

    def init_param_state(self, param: Tensor, grad: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        # x_{t-1} starts at the current point: a parameter first seen now has not moved (dx = 0).
        state = {"prev_param": param.detach().clone()}
        if group["base"] == "sgd":
            # buf = 0 makes the first update buf = g, torch's first-step convention, in one code path.
            state["momentum_buffer"] = torch.zeros_like(param)
        else:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        return state

    def _extra_pass(self, closure: Closure) -> tuple[dict[Tensor, Optional[Tensor]], Optional[Tensor]]:
        """Gradients at the stored ``x_{t-1}`` on the current batch; parameters and grads restored after.

        Returns ({param: ghat or None}, the second loss or None). Afterwards ``prev_param`` is ``x_t``.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        tracked = [p for p in params if "prev_param" in self.state.get(p, {})]
        current = [p.detach().clone() for p in tracked]
        previous = [self.state[p]["prev_param"] for p in tracked]
        saved_grads = [p.grad for p in params]
        protected = self._protected_buffers()
        buffer_snapshot = [b.clone() for b in protected]
        rng_after = self._get_rng() if self._rng_before is not None else None
        try:
            if tracked:
                torch._foreach_copy_(tracked, previous)
            for p in params:
                p.grad = None  # backward allocates fresh tensors: the saved g_t is never overwritten
            if self._rng_before is not None:
                self._set_rng(self._rng_before)
            with torch.enable_grad():
                returned = closure()
            ghat = {p: p.grad for p in params}
        finally:
            # Restore everything even if the closure raised: parameters, gradients, buffers, RNG.
            if tracked:
                torch._foreach_copy_(tracked, current)
            for p, g in zip(params, saved_grads):
                p.grad = g
            for b, snapshot in zip(protected, buffer_snapshot):
                b.copy_(snapshot)
            if rng_after is not None:
                self._set_rng(rng_after)
        # The clones of x_t become the next step's x_{t-1} (no copy).
        for p, x in zip(tracked, current):
            self.state[p]["prev_param"] = x
        loss2 = None
        if returned is not None:
            loss2 = returned.detach().reshape(()) if isinstance(returned, Tensor) else torch.tensor(float(returned))
        return ghat, loss2

    def _previous_direction(self, bucket: Bucket, step: Tensor) -> list[Tensor]:
        """``u_{t-1}`` of the bucket's params (before the base optimizer updates its buffers)."""
        if bucket.group["base"] == "sgd":
            return bucket.state["momentum_buffer"]
        return self._adam_direction(bucket, step - 1)

    @staticmethod
    def _adam_direction(bucket: Bucket, step: Tensor) -> list[Tensor]:
        """``mhat / (sqrt(vhat) + eps)`` from the stored moments with bias corrections of ``step``."""
        beta1, beta2 = bucket.group["betas"]
        dtype = bucket.params[0].dtype
        bias1 = (1.0 - beta1 ** step).to(dtype)
        bias2_sqrt = torch.sqrt(1.0 - beta2 ** step).to(dtype)
        direction = [torch.empty_like(v) for v in bucket.state["exp_avg_sq"]]
        adam_direction_(bucket.state["exp_avg"], bucket.state["exp_avg_sq"], bias2_sqrt, bucket.group["eps"],
                        direction, bias_correction1=bias1)
        return direction

    def update(self, loss: Optional[Tensor], closure: Optional[Closure]) -> None:
        assert closure is not None  # guaranteed by step()
        first = self.param_groups[0]
        eta0, delta = first["lr"], first["delta"]
        lr_min, lr_max = first["lr_min"], first["lr_max"]
        growth = first.get("lr_growth", math.inf)  # .get: checkpoints saved before the option: unbounded
        # .get: checkpoints saved before the options existed
        alignment_kind = first.get("alignment", "direction")
        normalised = first.get("surrogate", "sum") == "normalised"
        rayleigh = first.get("curvature", "norm") == "rayleigh"
        feedback = "eta" in self.global_state  # a Python fact (not a tensor value): no host sync
        step = self.global_scalar("step", 0.0)
        step.add_(1)
        eta = self.global_scalar("eta", min(max(eta0, lr_min), lr_max))
        big_a = self.global_scalar("A", 0.0)
        big_b = self.global_scalar("B", 0.0)
        dropped = self.global_scalar("dropped_feedback", 0.0)
        last_curvature = self.global_scalar("last_curvature", 0.0)
        device, dtype = self.scalar_device_dtype()
        zero = torch.zeros((), device=device, dtype=dtype)
        alignment, curvature = zero, zero

        buckets = self.all_buckets()  # creates the state of new params (prev_param = x_t) first
        if feedback:
            ghat, loss2 = self._extra_pass(closure)
            # <g, u> (same_batch: <g, ghat>), ||g - ghat||^2, ||dx||^2, ||u||^2 with u = u_(t-1)
            sums = [zero, zero, zero, zero, zero]
            for bucket in buckets:
                ratio = bucket.group["lr"] / eta0
                u_prev = self._previous_direction(bucket, step)
                # prev_param of the bucket's state lists is still x_{t-1} (the dict now holds x_t).
                dx = torch._foreach_sub(bucket.params, bucket.state["prev_param"])
                for source, g, u, d in zip(bucket.sources, bucket.grads, u_prev, dx):
                    gh = ghat[source]
                    if gh is not None:
                        gh = as_real(gh)  # a complex parameter is its real view, like g, u and dx
                    if gh is not None:  # (no gradient in the extra pass: ghat = 0)
                        if alignment_kind == "same_batch":
                            sums[0] = sums[0] + ratio * dot(g, gh, dtype)
                        elif alignment_kind == "start":
                            sums[0] = sums[0] + ratio * dot(gh, u, dtype)
                    diff = g if gh is None else gh.sub_(g)  # sign is irrelevant for the norm
                    if alignment_kind == "direction":
                        sums[0] = sums[0] + ratio * dot(g, u, dtype)
                    sums[1] = sums[1] + dot(diff, diff, dtype)
                    sums[2] = sums[2] + dot(d, d, dtype)
                    sums[3] = sums[3] + (ratio * ratio) * dot(u, u, dtype)
                    if rayleigh:  # <ghat - g, x_t - x_(t-1)> (diff = ghat - g here, or g where ghat is absent)
                        sums[4] = sums[4] + (dot(diff, d, dtype) if gh is not None else -dot(g, d, dtype))
            totals, mean_loss2 = self.reduce(sums, loss2)
            align, diff_sq, dx_sq, u_sq = totals[0], totals[1], totals[2], totals[3]
            moved = dx_sq > 0
            safe_dx_sq = torch.where(moved, dx_sq, 1.0)
            measured = torch.sqrt(diff_sq) / torch.sqrt(safe_dx_sq)  # ||g_t - ghat_t|| / ||dx||
            if rayleigh:
                # the secant curvature along the step, <g_t - ghat_t, dx> / ||dx||^2 (the Rayleigh quotient of
                # the Hessian for a quadratic). Where it is <= 0 (the loss looks concave along the step) the
                # quadratic model says "any step size": fall back to the norm estimate, an upper bound of the
                # secant's magnitude. Measured on ddpm_2d from lr 0.1: with a clamp at 0 instead, two
                # concave steps let eta grow 0.1 -> 1.7 in 9 steps and the loss jumped 14x.
                secant = -totals[4] / safe_dx_sq
                measured = torch.where(secant > 0, secant, measured)
            # An unmoved step (eta = 0) measures no curvature: reuse the last estimate. With L = 0 there, b = 0
            # while a = <g, u> counts in full, and the first step back from eta = 0 is A / B with a B that
            # never saw this region: measured on the test MLP from lr0 = 1, eta jumped 0 -> 28 -> 8470 and
            # the run diverged.
            curvature = torch.where(moved, measured, last_curvature)
            b_t = curvature * u_sq
            if normalised:
                # Each step's surrogate divided by ||u_(t-1)||^2: every step weighs the same in A / B instead
                # of the early steps with large directions dominating the sums for the rest of the run. A
                # zero direction (nothing moved) contributes nothing.
                has_direction = u_sq > 0
                weight = torch.where(has_direction, 1.0 / torch.where(has_direction, u_sq, 1.0), 0.0)
                align = align * weight
                b_t = torch.where(has_direction, curvature, 0.0)
            # A non-finite second evaluation (or an overflow) drops this step's feedback entirely.
            # (diff_sq is checked itself: with dx = 0 the curvature ignores it, the rule must not.)
            ok = torch.isfinite(align) & torch.isfinite(b_t) & torch.isfinite(diff_sq)
            if mean_loss2 is not None:
                ok = ok & torch.isfinite(mean_loss2)
            alignment = torch.where(ok, align, zero)
            curvature = torch.where(ok, curvature, zero)
            last_curvature.copy_(torch.where(ok & moved, curvature, last_curvature))
            big_a.add_(alignment)
            big_b.add_(torch.where(ok, b_t, zero))
            dropped.add_((~ok).to(dtype))
            denominator = delta + big_b
            positive = denominator > 0
            candidate = (delta * eta0 + big_a) / torch.where(positive, denominator, 1.0)
            candidate = candidate.clamp(lr_min, lr_max)
            if math.isfinite(growth):
                # At most lr_growth x the previous rate per step (from eta = 0: unbounded, nothing to scale).
                # The first feedback comes from a step at eta_0, and a small step measures the curvature of a
                # small neighbourhood only: measured on dlrm_ctr (Adam base, start 1e-3), eta jumped to 0.154
                # at step 2 and the loss to 96x.
                candidate = torch.where(eta > 0, torch.minimum(candidate, growth * eta), candidate)
            # a dropped feedback leaves eta as it was (with a growth bound the candidate could still climb)
            eta.copy_(torch.where(positive & ok, candidate, eta))

        for bucket in buckets:
            lr = eta.to(bucket.params[0].dtype) * (bucket.group["lr"] / eta0)
            self._base_step(bucket, step, lr)

        self.publish_stats(
            # group k steps with eta * lr_k / lr_0 (see _base_step's caller above)
            groups=[{"lr": eta * (group["lr"] / eta0)} for group in self.param_groups],
            lr=eta.clone(),
            alignment=alignment.clone(),
            curvature=curvature.clone(),
            A=big_a.clone(),
            B=big_b.clone(),
            step=step.clone(),
            dropped_feedback=dropped.clone(),
        )

    def _base_step(self, bucket: Bucket, step: Tensor, lr: Tensor) -> None:
        group = bucket.group
        if group["base"] == "sgd":
            direction = bucket.state["momentum_buffer"]
            torch._foreach_mul_(direction, group["momentum"])
            torch._foreach_add_(direction, bucket.grads)
        else:
            beta1, beta2 = group["betas"]
            torch._foreach_lerp_(bucket.state["exp_avg"], bucket.grads, 1.0 - beta1)
            torch._foreach_mul_(bucket.state["exp_avg_sq"], beta2)
            torch._foreach_addcmul_(bucket.state["exp_avg_sq"], bucket.grads, bucket.grads, value=1.0 - beta2)
            direction = self._adam_direction(bucket, step)
        if group["weight_decay"] != 0:
            torch._foreach_mul_(bucket.params, 1.0 - lr * group["weight_decay"])
        sub_scaled_(bucket.params, direction, lr)
