"""Case-table rows of GALA; see cases.py."""

from __future__ import annotations

import math

from tunefree.optim.gala import GALA

from .cases import Case, grid
from .reference_gala import GALAReference

CASES: list[Case] = [
    Case(
        name="gala", cls=GALA, reference=GALAReference, needs_closure=True, compiles=False,
        options=[dict(base="sgd", **o) for o in grid(
            lr=[0.1, 1e-3], momentum=[0.9, 0.0], weight_decay=[0.0, 0.1], delta=[0.0, 1.0],
            lr_max=[math.inf, 0.5])]
        # alignment="same_batch" (reading A in the closure form; SGD base only)
        + [dict(base="sgd", alignment="same_batch", **o) for o in grid(
            lr=[0.1, 1e-3], momentum=[0.9, 0.0], weight_decay=[0.0, 0.1], delta=[0.0, 1.0])]
        + [dict(base="sgd", alignment="same_batch", lr=0.1, lr_min=1e-3, lr_max=0.5)],
        train_kwargs=dict(lr=0.1),
        bad_values=dict(lr=-0.1, base="rmsprop", momentum=1.0, weight_decay=-0.1, delta=-1.0,
                        lr_min=-1.0, lr_max=0.0, alignment="gradient"),
    ),
    Case(
        name="gala_adam", cls=GALA, reference=GALAReference, needs_closure=True, compiles=False,
        options=[dict(base="adam", **o) for o in grid(
            lr=[1e-3, 1e-1], weight_decay=[0.0, 0.1], delta=[0.0, 1.0], lr_min=[0.0, 1e-3])],
        train_kwargs=dict(lr=1e-3, base="adam"),
        bad_values=dict(lr=0.0, betas=(0.9, 1.5), eps=-1.0, weight_decay=-1.0, delta=float("inf")),
    ),
]
