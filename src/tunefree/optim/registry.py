"""Optimizers by name: one table that drives the harness, the CLI and the generic tests.

Each entry says what ``lr`` means for the method (the meanings differ: MoMo's ``lr`` caps an adaptive
step, GALA's is only the starting point), its documented default ``lr``, and how it must be stepped
(``needs_loss``: the mini-batch loss must reach ``step``; ``needs_closure``: ``step`` must get a closure
that re-evaluates the batch). The torch baselines (SGD-momentum, Adam, AdamW) are in the table too, so
that a comparison is driven by names alone, and so are optional peer methods from other packages
(Prodigy, D-Adaptation, Schedule-Free, momo-opt), usable when their package is installed.

:func:`register_optimizer` adds a user's own optimizer (any ``factory(params, **options)`` returning a
torch optimizer) beside them; the built-in names cannot be replaced.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

__all__ = ["OptimizerInfo", "available_optimizers", "create_optimizer", "get_optimizer_info", "register_optimizer",
           "is_builtin"]


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
    #: a method from another package, compared only when that package is installed
    peer: bool = False
    #: keys of ``optimizer.stats`` worth tracing over a run (adaptive quantities)
    trace_stats: tuple[str, ...] = ()
    #: keyword arguments the registry adds unless the caller overrides them
    fixed_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: a user's optimizer (:func:`register_optimizer`): the callable itself; ``target`` then only names it
    factory: Callable[..., torch.optim.Optimizer] | None = field(default=None, compare=False)

    def load_class(self) -> Callable[..., torch.optim.Optimizer]:
        """The optimizer class (or, for a user's optimizer, its factory)."""
        if self.factory is not None:
            return self.factory
        module_name, attribute = self.target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    @property
    def cls(self) -> Callable[..., torch.optim.Optimizer]:
        return self.load_class()

    def import_error(self) -> str | None:
        """``None`` when the class imports, else a one-line reason (e.g. a peer's package is missing)."""
        try:
            self.load_class()
        except Exception as exc:  # ImportError, or any failure inside a half-installed package
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None

    def create(self, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
        merged = {"lr": self.default_lr, **self.fixed_kwargs, **kwargs}
        return self.load_class()(params, **merged)


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

# Peers: other packages' methods, for comparisons only (extra ``peers``). Defaults are the packages' own
# (checked against prodigyopt 1.1.2, dadaptation 3.2, schedulefree 1.4.1, momo-opt 0.1.0): no weight
# decay; Prodigy and D-Adaptation without Adam's bias correction; Schedule-Free without warm-up.
# Schedule-Free has ``train()``/``eval()`` modes, which the benchmark runner switches around every
# evaluation (as for any optimizer with these methods).
_register(OptimizerInfo(
    name="prodigy", target="prodigyopt:Prodigy", default_lr=1.0, peer=True,
    lr_meaning="multiplier on Prodigy's estimated step size d",
    description="Prodigy (prodigyopt): Adam with a D-Adaptation-style estimate of the step size",
))
_register(OptimizerInfo(
    name="dadapt_adam", target="dadaptation:DAdaptAdam", default_lr=1.0, peer=True,
    lr_meaning="multiplier on D-Adaptation's estimated step size",
    description="D-Adaptation Adam (dadaptation): Adam with a step size from a distance-to-solution bound",
))
_register(OptimizerInfo(
    name="schedulefree_adamw", target="schedulefree:AdamWScheduleFree", default_lr=2.5e-3, peer=True,
    lr_meaning="step size of schedule-free AdamW (warm-up off)",
    description="Schedule-Free AdamW (schedulefree): iterate averaging instead of an lr schedule",
))
_register(OptimizerInfo(
    name="momo_opt", target="momo:Momo", default_lr=1.0, needs_loss=True, peer=True,
    lr_meaning="cap on the MoMo step (the authors' package momo-opt)",
    description="MoMo as published by its authors (momo-opt), for cross-checks of tunefree's momo",
))


#: the names registered by tunefree itself (methods, baselines, peers): never replaced by a user's optimizer
_BUILTIN = frozenset(_REGISTRY)


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of tunefree's own entries (not a :func:`register_optimizer` one)."""
    return _key(name) in _BUILTIN


def register_optimizer(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    *,
    default_lr: float,
    lr_meaning: str,
    needs_loss: bool = False,
    needs_closure: bool = False,
    trace_stats: Iterable[str] = (),
    description: str = "",
    replace: bool = False,
) -> OptimizerInfo:
    """Register a user's optimizer under ``name`` so that ``create_optimizer`` and ``tunefree bench``
    (``--optimizers NAME``, or ``--optimizer MODULE:FACTORY``) can use it beside the built-ins.

    ``factory(params, lr=..., **options)`` returns a ``torch.optim.Optimizer`` (an optimizer class is
    such a factory). ``default_lr`` is the documented default the benchmark's grid is centred on
    (``lr = default_lr * 10**k``); ``lr_meaning`` says in a few words what ``lr`` is for the method.
    ``needs_loss``/``needs_closure`` say how it must be stepped (the benchmark always passes a closure
    that re-evaluates the batch, so both work there). ``trace_stats`` names keys of
    ``optimizer.stats`` worth tracing over a run.

    Raises ``ValueError`` for a built-in name (they cannot be replaced), for a name already registered
    by the user unless ``replace=True`` (registering the same factory again is a no-op), and for a
    factory that is not callable or a ``default_lr`` that is not a positive finite number. Returns the
    registry entry.

    For ``tunefree bench`` with several worker processes, register at the top level of an importable
    module or file (not under ``if __name__ == "__main__":``), so that every worker registers it too.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_optimizer: name must be a non-empty string, got {name!r}")
    key = _key(name.strip())
    if not callable(factory):
        raise ValueError(f"register_optimizer({name!r}): factory must be callable (an optimizer class or a "
                         f"function of params), got {type(factory).__name__}")
    try:
        lr = float(default_lr)
    except (TypeError, ValueError):
        lr = math.nan
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"register_optimizer({name!r}): default_lr must be a positive finite number, "
                         f"got {default_lr!r}")
    if not isinstance(lr_meaning, str) or not lr_meaning.strip():
        raise ValueError(f"register_optimizer({name!r}): lr_meaning must say what lr means for the method")
    if key in _BUILTIN:
        raise ValueError(f"register_optimizer: {key!r} is a built-in optimizer and cannot be replaced; "
                         "choose another name")
    target = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__name__)}"
    info = OptimizerInfo(
        name=key, target=target, default_lr=lr, lr_meaning=lr_meaning.strip(), needs_loss=bool(needs_loss),
        needs_closure=bool(needs_closure), trace_stats=tuple(trace_stats),
        description=description or f"{target} (registered by the user)", factory=factory,
    )
    existing = _REGISTRY.get(key)
    if existing is not None and not replace:
        if existing.factory is factory and existing == info:
            return existing  # the same registration again (a module imported twice): nothing changes
        raise ValueError(f"register_optimizer: {key!r} is already registered ({existing.target}); pass "
                         "replace=True to replace it")
    _REGISTRY[key] = info
    return info


def available_optimizers(*, include_baselines: bool = True, include_peers: bool = False) -> list[OptimizerInfo]:
    """Registered optimizers: tunefree's first, then the torch baselines, then (if asked) the peers.

    Peers are listed whether or not their package is installed; check ``info.import_error()``.
    """
    infos = sorted(_REGISTRY.values(), key=lambda info: (info.peer, info.baseline, info.name))
    return [
        info for info in infos
        if (include_baselines or not info.baseline) and (include_peers or not info.peer)
    ]


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name`` (case-insensitive; ``-`` and ``_`` are the same)."""
    key = _key(name)
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown optimizer {name!r}; available: {known}")
    return _REGISTRY[key]


def create_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer by name; ``lr`` defaults to the method's documented default."""
    return get_optimizer_info(name).create(params, **kwargs)

