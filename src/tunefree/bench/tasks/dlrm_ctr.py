"""``dlrm_ctr``: DLRM-style click-through-rate model on a synthetic Criteo-like data set.

* **Data** (generated once from a fixed seed, cached as .npz, ~60 MB): 550 000 rows, 13 dense features
  (log-normal with per-feature location/scale, fed to the model as standardised ``log1p``) and 26
  categorical features, each Zipf(1.2) over 1 000 ids (a heavy head and a long tail; id labels
  permuted per field). Labels ``y ~ Bernoulli(p)`` with ``logit p`` from a **planted** model: per-id
  biases + linear dense term + a rank-8 factorization machine over all 39 fields, with the intercept
  set by bisection so the mean click rate is 27 %. Test: the last 50 000 rows; val: 2 % of the first
  500 000 (10 000, kept small because it is evaluated often); train: 490 000.
* **Model**: DLRM: bottom MLP 13-64-16 on dense; 26 embedding tables 1000 x 16; pairwise dot-product
  interactions of the 27 vectors (351) concatenated with the bottom output; top MLP 367-128-64-1
  (about 473k parameters).
* **Loss**: binary cross-entropy (log-loss) on logits.
* **Metric**: ``gap_to_bayes`` = log-loss minus the Bayes log-loss of the split (mean binary entropy
  of the planted probabilities; the exact floor of the expected log-loss), lower is better. Extras:
  ``loss`` (log-loss), ``bayes_logloss``, ``auc``.
* **Budget**: standard ~2 epochs at batch 512 (1 900 steps, 19 evals); quick 150 steps (10 evals).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import ArrayInstance, Split, chunked_forward, init_model, to_splits
from .base import Budget, Task, cached_arrays

__all__ = ["DLRM", "DlrmCtr", "make_task"]

N_ROWS, N_TEST = 550_000, 50_000
N_DENSE, N_SPARSE, N_IDS = 13, 26, 1000
ZIPF_A = 1.2
PLANTED_RANK = 8
CLICK_RATE = 0.27
DATA_SEED = 5
EMB_DIM = 16
BATCH_SIZE = 512
VAL_FRACTION = 0.02


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def _generate() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    # dense: log-normal counts-like features; the model sees standardised log1p, as Criteo pipelines do
    loc, scale = rng.uniform(0.0, 2.0, N_DENSE), rng.uniform(0.5, 1.5, N_DENSE)
    dense = np.log1p(np.exp(loc + scale * rng.standard_normal((N_ROWS, N_DENSE))))
    dense = (dense - dense.mean(axis=0)) / dense.std(axis=0)
    # categorical: Zipf(a) over N_IDS ids by inverse-CDF sampling, then a per-field relabelling
    weights = np.arange(1, N_IDS + 1, dtype=np.float64) ** -ZIPF_A
    cdf = np.cumsum(weights / weights.sum())
    cats = np.searchsorted(cdf, rng.random((N_ROWS, N_SPARSE)), side="right").clip(max=N_IDS - 1)
    for f in range(N_SPARSE):
        cats[:, f] = rng.permutation(N_IDS)[cats[:, f]]
    # planted model; scales chosen so that the Bayes log-loss (~0.36) sits well below the constant
    # predictor's (~0.58): there is signal to learn, and an exact floor to measure the gap to
    fields = np.arange(N_SPARSE)
    id_bias = rng.normal(0.0, 0.25, (N_SPARSE, N_IDS))
    id_factors = rng.normal(0.0, 0.17, (N_SPARSE, N_IDS, PLANTED_RANK))
    dense_factors = rng.normal(0.0, 0.15, (N_DENSE, PLANTED_RANK))
    dense_weights = rng.normal(0.0, 0.25, N_DENSE)
    logit = id_bias[fields, cats].sum(axis=1) + dense @ dense_weights
    for start in range(0, N_ROWS, 50_000):  # chunked: the factor tensor is rows x 39 x rank
        rows = slice(start, start + 50_000)
        vecs = np.concatenate([id_factors[fields, cats[rows]], dense[rows, :, None] * dense_factors], axis=1)
        # FM pairwise term: sum_{i<j} <v_i, v_j> = (||sum v||^2 - sum ||v||^2) / 2
        logit[rows] += 0.5 * ((vecs.sum(axis=1) ** 2).sum(axis=1) - (vecs**2).sum(axis=(1, 2)))
    lo, hi = -20.0, 20.0
    for _ in range(60):  # intercept by bisection: mean click probability = CLICK_RATE
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < CLICK_RATE else (lo, mid)
    prob = _sigmoid(logit + 0.5 * (lo + hi))
    labels = (rng.random(N_ROWS) < prob).astype(np.float32)
    return {"dense": dense.astype(np.float32), "cats": cats.astype(np.int16), "y": labels,
            "p": prob.astype(np.float64)}


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log() + (1 - p) * torch.log1p(-p))


@functools.lru_cache(maxsize=1)
def _data() -> tuple[dict[str, Split], dict[str, float]]:
    arrays = cached_arrays("ctr_v1", _generate)
    # int32 ids: half the memory of int64, and nn.Embedding accepts them
    rows = (arrays["dense"], arrays["cats"].astype(np.int32), arrays["y"], arrays["p"])
    n = N_ROWS - N_TEST
    # val is 2 % of train (10 000 rows), not 10 %: it is evaluated 10-20 times per run, and 10 000 rows
    # already resolve log-loss differences between runs (paired on the same rows) to ~1e-3
    splits = to_splits(tuple(a[:n] for a in rows), tuple(a[n:] for a in rows), DATA_SEED,
                       val_fraction=VAL_FRACTION)
    bayes = {name: float(_binary_entropy(split[3]).mean()) for name, split in splits.items()}
    # the planted probabilities are only needed for the Bayes floor; drop them from the batches
    return {name: split[:3] for name, split in splits.items()}, bayes


class DLRM(nn.Module):
    """Bottom MLP + embedding tables + dot-product interactions + top MLP; forward returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(N_DENSE, 64), nn.ReLU(), nn.Linear(64, EMB_DIM), nn.ReLU())
        self.tables = nn.ModuleList(nn.Embedding(N_IDS, EMB_DIM) for _ in range(N_SPARSE))
        for table in self.tables:
            # DLRM's uniform(+-1/sqrt(rows)) instead of torch's N(0, 1): unit-variance embeddings make
            # the 16-dim dot products (the interactions) huge at initialisation
            nn.init.uniform_(table.weight, -N_IDS**-0.5, N_IDS**-0.5)
        n_vec = N_SPARSE + 1
        # flat indices of the upper triangle (i < j) of the n_vec x n_vec Gram matrix; index_select on
        # the flattened matrix has a cheaper backward than 2-D advanced indexing
        rows, cols = torch.triu_indices(n_vec, n_vec, offset=1)
        self.register_buffer("pairs", rows * n_vec + cols, persistent=False)
        n_inter = n_vec * (n_vec - 1) // 2
        self.top = nn.Sequential(nn.Linear(n_inter + EMB_DIM, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 1))

    def forward(self, dense: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)
        vectors = torch.stack([bottom] + [table(cats[:, i]) for i, table in enumerate(self.tables)], dim=1)
        gram = vectors @ vectors.transpose(1, 2)
        interactions = gram.flatten(1).index_select(1, self.pairs)
        return self.top(torch.cat([bottom, interactions], dim=1)).squeeze(-1)


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); scores are continuous, so ties are rare."""
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(len(scores), dtype=torch.float64)
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


class _Logits(nn.Module):
    """Adapter so :func:`chunked_forward` can batch the two-input model over one packed tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.model(packed[:, :N_DENSE], packed[:, N_DENSE:].to(torch.int32))


@dataclass
class CtrInstance(ArrayInstance):
    """Batches are (dense, ids, label); ``bayes`` holds each split's Bayes log-loss."""

    bayes: dict[str, float]

    def loss(self, batch: Split) -> torch.Tensor:
        dense, cats, y = batch
        return F.binary_cross_entropy_with_logits(self.model(dense, cats), y)

    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        dense, cats, y = tensors
        # ids < 1000 are exact in float32, so dense and ids can travel packed through chunked_forward
        logits = chunked_forward(_Logits(self.model), torch.cat([dense, cats.float()], dim=1), chunk=8192)
        logloss = float(F.binary_cross_entropy_with_logits(logits, y))
        return {"gap_to_bayes": logloss - self.bayes[split], "loss": logloss,
                "bayes_logloss": self.bayes[split], "auc": _auc(logits, y)}


@dataclass(frozen=True)
class DlrmCtr(Task):
    """Task object of ``dlrm_ctr`` (see the module docstring)."""

    def build(self, seed: int) -> CtrInstance:
        splits, bayes = _data()
        return CtrInstance(model=init_model(seed, DLRM), seed=seed, splits=splits, batch_size=BATCH_SIZE,
                           bayes=bayes)


def make_task() -> DlrmCtr:
    return DlrmCtr(
        name="dlrm_ctr",
        description=("DLRM (26 x 1000 x 16 embeddings, dot interactions, MLPs) on synthetic Criteo-like CTR "
                     "data with a planted factorization machine (490k/10k/50k); metric test log-loss minus "
                     "the Bayes log-loss"),
        metric="gap_to_bayes",
        higher_is_better=False,
        budgets={"quick": Budget(steps=150, eval_every=15), "standard": Budget(steps=1900, eval_every=100)},
    )
