"""Pre-LN Transformer pieces shared by ``gpt_char`` and ``seq2seq_sort``.

Attention goes through ``F.scaled_dot_product_attention`` (fused kernels where available). No dropout
anywhere: the runner's closure may evaluate a batch twice per step and must get the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "Block"]


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (``x`` itself for self-attention).

    ``key_mask`` (batch x keys, True = attend) hides padding keys; ``causal`` hides later positions
    (self-attention only). The two are not combined: causal self-attention is only used where
    padding sits at the end of a sequence, so no real position ever attends to a pad key.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                key_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        context = x if context is None else context
        k, v = self.kv(context).chunk(2, dim=-1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(self._split(self.q(x)), self._split(k), self._split(v),
                                           attn_mask=mask, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention over ``memory``, GELU MLP (4x)."""

    def __init__(self, dim: int, heads: int, cross: bool = False) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.ln_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads) if cross else None
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, *, causal: bool = False, key_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.ln_self(x), key_mask=key_mask, causal=causal)
        if self.cross_attn is not None and self.ln_cross is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs memory")
            x = x + self.cross_attn(self.ln_cross(x), memory, key_mask=memory_mask)
        return x + self.mlp(self.ln_mlp(x))
