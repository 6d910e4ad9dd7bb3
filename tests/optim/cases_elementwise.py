"""Case-table rows of the elementwise optimizers (SMES, AGD, RSGDM); see cases.py."""

from __future__ import annotations

from tunefree.optim.agd import AGD
from tunefree.optim.rsgdm import RSGDM
from tunefree.optim.smes import SMES

from .cases import Case, grid
from .references_elementwise import AGDReference, RSGDMReference, SMESReference

CASES: list[Case] = [
    Case(
        name="smes", cls=SMES, reference=SMESReference,
        options=(
            grid(lr=[1e-2], alpha=[0.0, 0.125, 0.25, 0.3, 0.5, ("linear", 0.5, 0.0, 20), ("cosine", 0.0, 0.5, 25)],
                 weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True])
            # the paper's formula (the default before lr_scaling existed) and the calibrated one
            + grid(lr=[1e-2], alpha=[0.0, 0.25, 0.5, ("linear", 0.5, 0.0, 20)], lr_scaling=["legacy", "rms", "initial"],
                   weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True])
            + grid(lr=[1e-2], alpha=[0.7, -0.2], allow_any_alpha=[True], lr_scaling=["rms", "legacy", "initial"])
            + grid(lr=[1e-2], alpha=[0.0, 0.125, 0.25, 0.3, 0.5], padam_compat=[True], weight_decay=[0.0, 0.1])
        ),
        train_kwargs=dict(lr=3e-2),
        bad_values=dict(lr=-1e-3, alpha=0.7, betas=(0.9, 1.5), eps=-1.0, weight_decay=-1.0,
                        lr_scaling="adam"),
    ),
    Case(
        name="agd", cls=AGD, reference=AGDReference,
        options=(
            grid(lr=[1e-2], delta=[1e-5, 1e-1], weight_decay=[0.0, 0.1], decoupled_weight_decay=[True, False],
                 amsgrad=[False, True], clip=[None, 0.5])
            + grid(lr=[1e-2], delta=[1e-5, 1e-1], weight_decay=[0.1], fixed_decay=[True])
        ),
        train_kwargs=dict(lr=1e-2),
        bad_values=dict(lr=-1e-3, delta=0.0, betas=(1.0, 0.999), weight_decay=-1.0, clip=-1.0),
    ),
    Case(
        name="rsgdm", cls=RSGDM, reference=RSGDMReference,
        options=grid(lr=[1.0, 0.3], weight_decay=[0.0, 0.1], first_step=["zero_diff", "zero_prev"],
                     correction=[True, False]),
        train_kwargs=dict(lr=0.3),
        bad_values=dict(lr=-1.0, beta=1.0, weight_decay=-1.0, first_step="bogus"),
    ),
]
