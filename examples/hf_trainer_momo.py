"""MoMo inside the Hugging Face ``Trainer`` (CPU, no downloads, synthetic data, a few steps).

The Trainer calls a bare ``optimizer.step()``; ``TunefreeTrainer`` (from ``tunefree.integrations.hf``)
hands MoMo the mean loss of each (accumulated) batch, so MoMo's adaptive step size ``tau`` is computed from
the real loss. Run::

    python examples/hf_trainer_momo.py                       # tiny MLP, 8 steps
    python examples/hf_trainer_momo.py --model gpt2 --grad-accum 2
    python examples/hf_trainer_momo.py --no-helper           # plain Trainer: MoMo's missing-loss error

Needs ``pip install "tunefree[integrations]"`` (transformers, accelerate).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tunefree import MoMo


class TinyRegressor(nn.Module):
    """A plain module in the Trainer's convention: ``forward(**batch)`` returns ``{"loss": ..., "logits": ...}``.

    ``seen_losses`` records the loss of every training forward pass (for checks)."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 1))
        self.seen_losses: list[float] = []

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(inputs).squeeze(-1)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.mse_loss(logits, labels)
            if self.training:
                self.seen_losses.append(float(out["loss"].detach()))
        return out


class RegressionData(torch.utils.data.Dataset):
    def __init__(self, n: int = 256, features: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, features, generator=g)
        w = torch.randn(features, generator=g)
        self.y = torch.tanh(self.x @ w / 3) + 0.1 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.x[i], "labels": self.y[i]}


class TokenData(torch.utils.data.Dataset):
    """Random token sequences for a causal LM (``labels`` = ``input_ids``; the model shifts them).

    Position 0 of ``labels`` is -100: it is never a prediction target, and masking it keeps the Trainer's
    token count (``num_items_in_batch``) exact also for models whose class name hides that their loss
    shifts labels (``GPT2LMHeadModel``: transformers 5.x then counts one token too many per row)."""

    def __init__(self, n: int = 128, length: int = 16, vocab: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.ids[i].clone()
        labels[0] = -100
        return {"input_ids": self.ids[i], "labels": labels}


def tiny_gpt2(vocab: int = 64) -> nn.Module:
    """A 1-layer GPT-2 built from a config (random weights, nothing downloaded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config)


@dataclass
class Result:
    trainer: Any
    optimizer: Any
    taus: list[float] = field(default_factory=list)      # MoMo's stats["tau"] after each optimizer step
    losses: list[float] = field(default_factory=list)    # MoMo's averaged loss model after each step


def train(
    max_steps: int = 8,
    grad_accum: int = 1,
    model: str = "mlp",
    helper: bool | str = True,
    optimizer_cls: type = MoMo,
    optimizer_kwargs: dict[str, Any] | None = None,
    batch_size: int = 8,
    bf16: bool = False,
    output_dir: str | None = None,
    seed: int = 0,
) -> Result:
    """Train for ``max_steps`` optimizer steps and return the trainer, the optimizer and MoMo's taus.

    ``helper``: True uses ``TunefreeTrainer``; ``"patch"`` a plain ``Trainer`` patched with
    ``add_loss_feed``; False a plain ``Trainer`` (MoMo then raises its missing-loss error)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from tunefree.integrations import find_tunefree_optimizer
    from tunefree.integrations.hf import TunefreeTrainer, add_loss_feed

    torch.manual_seed(seed)
    if model == "mlp":
        net, data = TinyRegressor(), RegressionData(seed=seed)
    elif model == "gpt2":
        net, data = tiny_gpt2(), TokenData(seed=seed)
    else:
        raise ValueError(f"model must be 'mlp' or 'gpt2', got {model!r}")

    result = Result(trainer=None, optimizer=None)

    class RecordTau(TrainerCallback):
        def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
            opt = find_tunefree_optimizer(optimizer)
            if opt is not None and "tau" in opt.stats:
                result.taus.append(float(opt.stats["tau"]))
                result.losses.append(float(opt.global_state["loss_avg"]))

    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="tunefree-hf-"),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        lr_scheduler_type="constant",  # MoMo's lr caps its own step size: no decay schedule needed here
        logging_steps=max(1, max_steps // 4),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer_cls = TunefreeTrainer if helper is True else Trainer
    trainer = trainer_cls(
        model=net,
        args=args,
        train_dataset=data,
        optimizer_cls_and_kwargs=(optimizer_cls, optimizer_kwargs or {"lr": 1.0}),
        callbacks=[RecordTau()],
    )
    if helper == "patch":
        add_loss_feed(trainer)
    result.trainer = trainer
    trainer.train()
    result.optimizer = find_tunefree_optimizer(trainer.optimizer)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--model", choices=("mlp", "gpt2"), default="mlp")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (works on CPU)")
    parser.add_argument("--no-helper", action="store_true", help="plain Trainer (shows MoMo's missing-loss error)")
    args = parser.parse_args()
    result = train(args.steps, args.grad_accum, args.model, helper=not args.no_helper, bf16=args.bf16)
    for i, (tau, loss) in enumerate(zip(result.taus, result.losses), 1):
        print(f"step {i:3d}  loss avg {loss:.4f}  MoMo tau {tau:.4g}")


if __name__ == "__main__":
    main()
