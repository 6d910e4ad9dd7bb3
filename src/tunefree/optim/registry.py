"""Optimizers by name: one table that drives the harness, the CLI and the generic tests.

Each entry says what ``lr`` means for the method (the meanings differ: MoMo's ``lr`` caps an adaptive
step, GALA's is only the starting point), its documented default ``lr``, and how it must be stepped
(``needs_loss``: the mini-batch loss must reach ``step``; ``needs_closure``: ``step`` must get a closure
that re-evaluates the batch). The torch baselines (SGD-momentum, Adam, AdamW) are in the table too, so
that a comparison is driven by names alone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

__all__ = ["OptimizerInfo", "available_optimizers", "create_optimizer", "get_optimizer_info"]


@dataclass(frozen=True)
class OptimizerInfo:
    """Metadata of one registered optimizer."""

    name: str
    target: str  # "module:attribute" of the class (imported on first use)
    default_lr: float
    lr_meaning: str
    needs_loss: bool = False
    needs_closure: bool = False
    baseline: bool = False
    #: keys of ``optimizer.stats`` worth tracing over a run (adaptive quantities)
    trace_stats: tuple[str, ...] = ()
    #: keyword arguments the registry adds unless the caller overrides them
    fixed_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        module_name, attribute = self.target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def create(self, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        merged = {"lr": self.default_lr, **self.fixed_kwargs, **kwargs}
        return self.cls(params, **merged)


_REGISTRY: dict[str, OptimizerInfo] = {}


def _register(info: OptimizerInfo) -> None:
    _REGISTRY[info.name] = info


_register(OptimizerInfo(
    name="sgd", target="torch.optim:SGD", default_lr=0.1, baseline=True,
    fixed_kwargs={"momentum": 0.9},
    lr_meaning="step size of torch heavy-ball momentum (buf = 0.9 buf + g, no dampening)",
    description="torch.optim.SGD with momentum 0.9 (baseline)",
))
_register(OptimizerInfo(
    name="adam", target="torch.optim:Adam", default_lr=1e-3, baseline=True,
    lr_meaning="step size of the bias-corrected Adam update",
    description="torch.optim.Adam (baseline)",
))
_register(OptimizerInfo(
    name="adamw", target="torch.optim:AdamW", default_lr=1e-3, baseline=True,
    lr_meaning="step size of the bias-corrected Adam update; also scales the decoupled decay",
    description="torch.optim.AdamW, weight_decay 1e-2 (baseline)",
))
_register(OptimizerInfo(
    name="momo", target="tunefree.optim.momo:MoMo", default_lr=1.0, needs_loss=True,
    trace_stats=("tau", "lower_bound"),
    lr_meaning="cap on the adaptive Polyak-type step size tau (tau <= lr)",
    description="MoMo: SGD-momentum with a model-based adaptive step size",
))
_register(OptimizerInfo(
    name="momo_adam", target="tunefree.optim.momo:MoMoAdam", default_lr=1e-2, needs_loss=True,
    trace_stats=("tau", "lower_bound"),
    lr_meaning="cap on the adaptive step size tau in Adam's preconditioned metric",
    description="MoMo-Adam: Adam with a model-based adaptive step size",
))
_register(OptimizerInfo(
    name="smes", target="tunefree.optim.smes:SMES", default_lr=1e-3,
    trace_stats=("alpha",),
    lr_meaning="step size of mhat / (vhat^alpha + eps); its scale depends on alpha (|g|^(1-2 alpha))",
    description="SMES: Adam with a tunable exponent alpha on the second moment (0 = SGD-M, 0.5 = Adam)",
))
_register(OptimizerInfo(
    name="agd", target="tunefree.optim.agd:AGD", default_lr=1e-3,
    trace_stats=("frac_sgd_like",),
    lr_meaning="Adam-like step size; SGD-like coordinates move with lr/delta",
    description="AGD: auto-switching SGD/adaptive preconditioner from stepwise gradient differences",
))
_register(OptimizerInfo(
    name="rsgdm", target="tunefree.optim.rsgdm:RSGDM", default_lr=1.0,
    lr_meaning="step size of EMA-form momentum (dampened); torch SGD(lr, momentum=b) matches lr/(1-b)",
    description="RSGDM: SGD-momentum with a gradient-difference bias correction",
))
_register(OptimizerInfo(
    name="gala", target="tunefree.optim.gala:GALA", default_lr=0.1, needs_closure=True,
    trace_stats=("lr",),
    lr_meaning="initial learning rate eta_0 of the base optimizer; GALA adapts it online",
    description="GALA (SGD-momentum base): learning rate chosen online by gradient alignment + FTRL",
))
_register(OptimizerInfo(
    name="gala_adam", target="tunefree.optim.gala:GALA", default_lr=1e-3, needs_closure=True,
    trace_stats=("lr",), fixed_kwargs={"base": "adam"},
    lr_meaning="initial learning rate eta_0 of the Adam base; GALA adapts it online",
    description="GALA with an Adam base",
))


def available_optimizers(*, include_baselines: bool = True) -> list[OptimizerInfo]:
    """All registered optimizers, tunefree's first, then the torch baselines."""
    infos = sorted(_REGISTRY.values(), key=lambda info: (info.baseline, info.name))
    return [info for info in infos if include_baselines or not info.baseline]


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name`` (case-insensitive; ``-`` and ``_`` are the same)."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown optimizer {name!r}; available: {known}")
    return _REGISTRY[key]


def create_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer by name; ``lr`` defaults to the method's documented default."""
    return get_optimizer_info(name).create(params, **kwargs)

