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
        + [dict(base="sgd", alignment="same_batch", curvature="norm", lr_growth=math.inf, **o) for o in grid(
            lr=[0.1, 1e-3], momentum=[0.9, 0.0], weight_decay=[0.0, 0.1], delta=[0.0, 1.0])]
        + [dict(base="sgd", alignment="same_batch", curvature="norm", lr=0.1, lr_min=1e-3, lr_max=0.5)]
        # tunefree's options: the alignment at the start of the step, per-step normalised surrogates
        + [dict(base="sgd", curvature="norm", **o) for o in grid(
            alignment=["start", "direction", "same_batch"], surrogate=["normalised"], lr=[0.1],
            momentum=[0.9, 0.0], weight_decay=[0.0, 0.1], delta=[0.0, 1.0])]
        + [dict(base="sgd", alignment="start", surrogate="sum", lr=0.1, momentum=0.9)]
        + [dict(base="sgd", curvature="rayleigh", **o) for o in grid(
            alignment=["start", "direction"], surrogate=["normalised", "sum"], lr=[0.1, 1e-3], momentum=[0.9, 0.0],
            weight_decay=[0.0, 0.1])]
        + [dict(base="sgd", lr_growth=g, lr=0.1) for g in (1.0, 1.5, math.inf)],
        train_kwargs=dict(lr=0.1),
        bad_values=dict(lr=-0.1, base="rmsprop", momentum=1.0, weight_decay=-0.1, delta=-1.0,
                        lr_min=-1.0, lr_max=0.0, alignment="gradient", surrogate="mean",
                        curvature="hessian", lr_growth=0.5),
    ),
    Case(
        name="gala_adam", cls=GALA, reference=GALAReference, needs_closure=True, compiles=False,
        options=[dict(base="adam", **o) for o in grid(
            lr=[1e-3, 1e-1], weight_decay=[0.0, 0.1], delta=[0.0, 1.0], lr_min=[0.0, 1e-3])]
        + [dict(base="adam", **o) for o in grid(
            alignment=["start", "direction"], surrogate=["normalised", "sum"], lr=[1e-3], weight_decay=[0.0, 0.1],
            delta=[0.0, 1.0], curvature=["norm", "rayleigh"])],
        train_kwargs=dict(lr=1e-3, base="adam"),
        bad_values=dict(lr=0.0, betas=(0.9, 1.5), eps=-1.0, weight_decay=-1.0, delta=float("inf")),
    ),
]
