"""``seq2seq_sort``: encoder-decoder Transformer that learns to sort a sequence of symbols.

* **Data** (generated, fixed data seed): 50 000 pairs; source = 4-12 symbols (length uniform) drawn
  uniformly from a vocabulary of 20, target = the same symbols sorted. Token ids: 0 = PAD, 1 = BOS,
  2 = EOS, 3..22 = the symbols. Test: 5 000 pairs; val: 2 000 of the other 45 000 (kept small
  because greedy decoding for exact match is costly); train 43 000.
  Batches are trimmed to their longest sequence (no wasted padding).
* **Model**: pre-LN encoder-decoder Transformer, d = 64, 4 heads, MLP 4x, 2 encoder + 2 decoder blocks,
  learned positions, SDPA attention with padding masks (about 240k parameters).
* **Loss**: teacher-forced cross-entropy per target token (BOS-shifted input, target = sorted + EOS),
  padding ignored.
* **Metric**: ``ce`` = val/test cross-entropy in nats per target token (lower is better); ``loss`` is
  the same. Extras: ``token_accuracy`` (teacher-forced) and ``exact_match`` (fraction of sequences that
  greedy autoregressive decoding gets entirely right, EOS included; on val only the first 500
  pairs are decoded, to keep the frequent val evaluations cheap).
* **Budget**: standard 600 steps at batch 128 (10 evals). No quick budget (about 55 ms per step).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import ArrayInstance, Split, init_model, to_splits
from ._transformer import Block
from .base import Budget, Task

__all__ = ["Seq2SeqSort", "SortTransformer", "make_task"]

PAD, BOS, EOS = 0, 1, 2
N_SYMBOLS, MIN_LEN, MAX_LEN = 20, 4, 12
VOCAB = 3 + N_SYMBOLS
N_PAIRS, N_TEST = 50_000, 5_000
DIM, HEADS, LAYERS = 64, 4, 2
DATA_SEED = 17
BATCH_SIZE = 128
EVAL_CHUNK = 1000
#: greedy decoding costs ~13 decoder passes; on val (evaluated 10+ times a run) only the first 500
#: pairs are decoded for exact_match, the cross-entropy uses all of val; test decodes everything
DECODE_LIMIT = {"val": 500}
#: val is 2 000 pairs (not 10 % of train): enough for the per-token cross-entropy, and cheap to evaluate
VAL_FRACTION = 2000 / (N_PAIRS - N_TEST)


def _generate() -> tuple[np.ndarray, np.ndarray]:
    """Sources and sorted targets, ``(N_PAIRS, MAX_LEN)`` int64, PAD after each sequence's end."""
    rng = np.random.default_rng(DATA_SEED)
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, N_PAIRS)
    symbols = rng.integers(3, 3 + N_SYMBOLS, (N_PAIRS, MAX_LEN))
    padding = np.arange(MAX_LEN) >= lengths[:, None]
    source = np.where(padding, PAD, symbols)
    # sort with the padding pushed to the end (it sorts as +inf), then put PAD back
    target = np.sort(np.where(padding, np.iinfo(np.int64).max, symbols), axis=1)
    target = np.where(padding, PAD, target)
    return source.astype(np.int64), target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    source, target = _generate()  # a few ms: not worth a disk cache
    n = N_PAIRS - N_TEST
    return to_splits((source[:n], target[:n]), (source[n:], target[n:]), DATA_SEED, val_fraction=VAL_FRACTION)


def _trim(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(source, decoder input, decoder target)`` cut to the longest sequence in the batch."""
    length = int((source != PAD).sum(dim=1).max())
    source, target = source[:, :length], target[:, :length]
    pad_col = torch.full((len(target), 1), PAD, dtype=target.dtype)
    decoder_in = torch.cat([torch.full_like(pad_col, BOS), target], dim=1)
    # EOS goes right after each target's last symbol, i.e. into its first PAD slot
    decoder_out = torch.cat([target, pad_col], dim=1)
    decoder_out[torch.arange(len(target)), (target != PAD).sum(dim=1)] = EOS
    return source, decoder_in, decoder_out


class SortTransformer(nn.Module):
    """Encoder-decoder Transformer over the sort vocabulary; ``forward`` returns decoder logits."""

    def __init__(self, dim: int = DIM, heads: int = HEADS, layers: int = LAYERS) -> None:
        super().__init__()
        self.src_tokens = nn.Embedding(VOCAB, dim)
        self.tgt_tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Embedding(MAX_LEN + 1, dim)
        for emb in (self.src_tokens, self.tgt_tokens, self.positions):
            nn.init.normal_(emb.weight, std=0.02)  # small, as for GPT: keep the residual stream O(1)
        self.encoder = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.decoder = nn.ModuleList(Block(dim, heads, cross=True) for _ in range(layers))
        self.ln_enc = nn.LayerNorm(dim)
        self.ln_dec = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = source != PAD
        x = self.src_tokens(source) + self.positions.weight[: source.shape[1]]
        for block in self.encoder:
            x = block(x, key_mask=mask)
        return self.ln_enc(x), mask

    def decode(self, decoder_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        # causal self-attention without a padding mask: decoder padding only trails, so real
        # positions never see it, and padded positions are ignored by the loss
        x = self.tgt_tokens(decoder_in) + self.positions.weight[: decoder_in.shape[1]]
        for block in self.decoder:
            x = block(x, causal=True, memory=memory, memory_mask=memory_mask)
        return self.head(self.ln_dec(x))

    def forward(self, source: torch.Tensor, decoder_in: torch.Tensor) -> torch.Tensor:
        memory, mask = self.encode(source)
        return self.decode(decoder_in, memory, mask)


@dataclass
class SortInstance(ArrayInstance):
    """Batches are ``(source, decoder input, decoder target)``, trimmed to their longest sequence."""

    def make_batch(self, tensors: Split, generator: torch.Generator) -> Split:
        return _trim(*tensors)

    def loss(self, batch: Split) -> torch.Tensor:
        source, decoder_in, decoder_out = batch
        logits = self.model(source, decoder_in)
        return F.cross_entropy(logits.reshape(-1, VOCAB), decoder_out.reshape(-1), ignore_index=PAD)

    def _greedy(self, source: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy autoregressive decoding of ``steps`` tokens (the encoder runs once)."""
        memory, mask = self.model.encode(source)
        out = torch.full((len(source), 1), BOS, dtype=source.dtype)
        for _ in range(steps):
            logits = self.model.decode(out, memory, mask)
            out = torch.cat([out, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        return out[:, 1:]

    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        token_loss = correct_tokens = exact = 0.0
        n_tokens = n_decoded = 0
        decode_limit = DECODE_LIMIT.get(split, len(tensors[0]))
        for source, target in zip(*(t.split(EVAL_CHUNK) for t in tensors)):
            source, decoder_in, decoder_out = _trim(source, target)
            logits = self.model(source, decoder_in)
            real = decoder_out != PAD
            token_loss += float(F.cross_entropy(logits[real], decoder_out[real], reduction="sum"))
            correct_tokens += float((logits.argmax(dim=-1)[real] == decoder_out[real]).sum())
            n_tokens += int(real.sum())
            take = min(len(source), decode_limit - n_decoded)
            if take > 0:
                decoded = self._greedy(source[:take], decoder_out.shape[1])
                # a sequence counts if every real target position (symbols and EOS) is decoded right
                exact += float(((decoded == decoder_out[:take]) | ~real[:take]).all(dim=1).sum())
                n_decoded += take
        ce = token_loss / n_tokens
        return {"ce": ce, "loss": ce, "token_accuracy": correct_tokens / n_tokens,
                "exact_match": exact / n_decoded}


@dataclass(frozen=True)
class Seq2SeqSort(Task):
    """Task object of ``seq2seq_sort`` (see the module docstring)."""

    def build(self, seed: int) -> SortInstance:
        return SortInstance(model=init_model(seed, SortTransformer), seed=seed, splits=_splits(),
                            batch_size=BATCH_SIZE)


def make_task() -> Seq2SeqSort:
    return Seq2SeqSort(
        name="seq2seq_sort",
        description=("encoder-decoder Transformer (d=64, 2+2 layers) sorting 4-12 symbols of 20 "
                     "(43k/2k/5k synthetic pairs); metric cross-entropy per target token, "
                     "extra exact_match (greedy decoding)"),
        metric="ce",
        higher_is_better=False,
        budgets={"standard": Budget(steps=600, eval_every=60)},
    )
