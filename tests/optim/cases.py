"""The one table of optimizer cases that drives every generic contract test.

Each :class:`Case` names a registered optimizer, its plain reference implementation (``references.py``),
the option combinations the fast path must match the reference on, and what the contract tests may
assume about it. Adding an optimizer to tunefree means adding one row here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tunefree.optim.momo import MoMo, MoMoAdam

from .references import MoMoAdamReference, MoMoReference


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the given option values."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Case:
    name: str
    cls: type
    reference: type | None
    #: option combinations that the fast path must match the reference on
    options: list[dict[str, Any]]
    #: kwargs of a configuration that trains the contract-test model well
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    needs_loss: bool = False
    needs_closure: bool = False
    #: False where step() evaluates a closure itself (not compilable as a plain step)
    compiles: bool = True
    #: names of hyperparameters and a bad value for each (ValueError naming it is expected)
    bad_values: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


MOMO_CASES: list[Case] = [
    Case(
        name="momo", cls=MoMo, reference=MoMoReference, needs_loss=True,
        options=grid(lr=[1.0, 0.3], weight_decay=[0.0, 0.1], estimate_lower_bound=[False, True],
                     bias_correction=[False, True]),
        train_kwargs=dict(lr=1.0),
        bad_values=dict(lr=-1.0, beta=1.0, weight_decay=-0.1, lower_bound=float("inf")),
    ),
    Case(
        name="momo_adam", cls=MoMoAdam, reference=MoMoAdamReference, needs_loss=True,
        options=grid(lr=[1e-2, 1e-1], weight_decay=[0.0, 0.1], estimate_lower_bound=[False, True],
                     decoupled_weight_decay=[False, True]),
        train_kwargs=dict(lr=1e-2),
        bad_values=dict(lr=-1e-3, betas=(0.9, 1.5), eps=-1.0, weight_decay=-1.0),
    ),
]


def _all_cases() -> list[Case]:
    # Rows of the other optimizers live beside this file, one module per family.
    from . import cases_elementwise, cases_gala

    return MOMO_CASES + cases_elementwise.CASES + cases_gala.CASES


CASES: list[Case] = _all_cases()
