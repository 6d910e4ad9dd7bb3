"""MoMo (and GALA) in PyTorch Lightning with automatic optimization (CPU, synthetic data, a few steps).

``configure_optimizers`` returns MoMo; Lightning passes a closure to ``optimizer.step``, and MoMo takes the
loss from it. ``LossFeedMixin`` (``tunefree.integrations.lightning``) is needed for gradient accumulation
and for the fp16 ``GradScaler`` path, where Lightning calls a bare ``step()``. Run::

    python examples/lightning_momo.py                          # 32-true, 10 steps
    python examples/lightning_momo.py --precision bf16-mixed --accumulate 2
    python examples/lightning_momo.py --optimizer gala

Precisions on CPU (Lightning 2.6): "32-true", "64-true", "bf16-mixed", "bf16-true", "16-true" run;
"16-mixed" is replaced by "bf16-mixed" with a warning. An explicit
``MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))`` plugin (``--fp16-scaler``) exercises
the GradScaler path (bare ``step()``) on CPU.

Needs ``pip install "tunefree[integrations]"`` (lightning).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import nn

from tunefree import MoMo
from tunefree.integrations import find_tunefree_optimizer
from tunefree.integrations.lightning import LossFeedMixin


def make_data(n: int = 512, features: int = 8, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, generator=g)
    y = torch.tanh(x @ w / 3).unsqueeze(-1) + 0.1 * torch.randn(n, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


class Regressor(L.LightningModule):
    """A small MLP regressor; ``seen_losses`` records each training_step's loss (for checks)."""

    def __init__(self, optimizer_cls: type = MoMo, optimizer_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.optimizer_cls = optimizer_cls
        self.optimizer_kwargs = optimizer_kwargs if optimizer_kwargs is not None else {"lr": 1.0}
        self.seen_losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).float(), y.to(torch.float32))
        self.seen_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        kwargs = dict(self.optimizer_kwargs)
        if getattr(self.optimizer_cls, "__name__", "") == "GALA":
            kwargs.setdefault("model", self)  # GALA restores norm-layer statistics for its extra pass
        return self.optimizer_cls(self.parameters(), **kwargs)


class FedRegressor(LossFeedMixin, Regressor):
    """The same module with the loss feed (gradient accumulation, fp16 GradScaler path)."""


class RecordTau(L.Callback):
    """After each optimizer step, record the optimizer's adaptive step size (MoMo tau, GALA lr)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        opt = find_tunefree_optimizer(trainer.optimizers[0])
        if opt is None or "step" not in opt.global_state:
            return
        step = int(opt.global_state["step"])
        if step != self._last_step:
            self._last_step = step
            key = "tau" if "tau" in opt.stats else "lr"
            self.values.append(float(opt.stats[key]))


@dataclass
class Result:
    module: Any
    trainer: Any
    optimizer: Any
    taus: list[float] = field(default_factory=list)


def train(
    max_steps: int = 10,
    precision: str = "32-true",
    accumulate: int = 1,
    helper: bool = True,
    optimizer_cls: type = MoMo,
    optimizer_kwargs: dict[str, Any] | None = None,
    fp16_scaler: bool = False,
    batch_size: int = 16,
    seed: int = 0,
) -> Result:
    """Fit for ``max_steps`` optimizer steps; returns the module, trainer, optimizer and the recorded taus."""
    L.seed_everything(seed, verbose=False)
    module = (FedRegressor if helper else Regressor)(optimizer_cls, optimizer_kwargs)
    loader = torch.utils.data.DataLoader(make_data(seed=seed), batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    record = RecordTau()
    plugins = []
    trainer_precision: str | None = precision
    if fp16_scaler:
        from lightning.pytorch.plugins.precision import MixedPrecision

        plugins.append(MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu")))
        trainer_precision = None
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, precision=trainer_precision, plugins=plugins or None,
        accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, loader)
    return Result(module, trainer, find_tunefree_optimizer(trainer.optimizers[0]), record.values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--optimizer", choices=("momo", "momo-adam", "gala"), default="momo")
    parser.add_argument("--fp16-scaler", action="store_true", help="fp16 autocast + GradScaler on CPU")
    args = parser.parse_args()
    if args.optimizer == "momo":
        cls, kwargs = MoMo, {"lr": 1.0}
    elif args.optimizer == "momo-adam":
        from tunefree import MoMoAdam

        cls, kwargs = MoMoAdam, {"lr": 1e-2}
    else:
        from tunefree.optim.gala import GALA

        cls, kwargs = GALA, {"lr": 0.1}
    result = train(args.steps, args.precision, args.accumulate, optimizer_cls=cls, optimizer_kwargs=kwargs,
                   fp16_scaler=args.fp16_scaler)
    name = "tau" if args.optimizer != "gala" else "lr"
    losses = result.module.seen_losses
    print(f"first/last training loss {losses[0]:.4f} / {losses[-1]:.4f}")
    print(f"{name} per step: " + " ".join(f"{t:.3g}" for t in result.taus))


if __name__ == "__main__":
    main()
