"""``cnn_fmnist``: small CNN (2 conv + 2 fc) on Fashion-MNIST.

* **Data**: Fashion-MNIST, 60 000 train / 10 000 test grey 28 x 28 images, 10 classes (Zalando,
  MIT licence). Not bundled with any Python package: install the Debian package
  (``apt-get install dataset-fashion-mnist``, files in ``/usr/share/datasets/fashion-mnist/``), or put
  the four IDX ``.gz`` files in ``<data folder>/fashion-mnist/``. Parsed with numpy and cached as .npz.
  Pixels scaled to [0, 1] and normalised with the train mean/std. Val: 5 % of train (3 000,
  kept small because a forward pass of the CNN is costly); train keeps 57 000.
* **Model**: conv5x5(32) - ReLU - maxpool2 - conv5x5(64) - ReLU - maxpool2 - fc 1024-128 - ReLU -
  fc 128-10 (about 185k parameters, no dropout or batch norm).
* **Loss**: mean cross-entropy. **Metric**: ``accuracy`` (higher is better); ``loss`` alongside.
* **Budget**: standard ~3 epochs at batch 128 (1 300 steps, 10 evals). No quick budget (not
  zero-install, and ~25 ms per step).
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ._common import ClassifierInstance, Split, init_model, to_splits
from .base import Budget, Task, TaskUnavailable, cached_arrays, data_dir

__all__ = ["CnnFmnist", "make_task", "read_idx"]

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x": "train-images-idx3-ubyte.gz",
    "y": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
INSTALL_HINT = ("Fashion-MNIST is not installed. On Debian/Ubuntu: `sudo apt-get install -y dataset-fashion-mnist` "
                "(files land in /usr/share/datasets/fashion-mnist/); elsewhere put the four IDX .gz files "
                f"({', '.join(FILES.values())}) in <data folder>/fashion-mnist/ "
                "(data folder: $TUNEFREE_DATA or ~/.cache/tunefree).")
DATA_SEED = 11
BATCH_SIZE = 128
# 5 % (3 000 images), not 10 %: one pass over the val split costs about as much as 15 training steps
VAL_FRACTION = 0.05


def _source_dir() -> Path | None:
    """The first folder holding all four IDX files, or None."""
    for folder in (data_dir() / "fashion-mnist", SYSTEM_DIR):
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (big-endian header: magic with dtype code and rank, then the dims)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:  # 0x08: unsigned byte, the only type these use
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    rank = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=rank, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(tuple(dims))


def _parse() -> dict[str, np.ndarray]:
    folder = _source_dir()
    if folder is None:
        raise TaskUnavailable(INSTALL_HINT)
    return {key: read_idx(folder / name) for key, name in FILES.items()}


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    arrays = cached_arrays("fashion_mnist_v1", _parse)  # uint8 on disk: 55 MB instead of 220 MB
    splits = to_splits((arrays["x"], arrays["y"].astype(np.int64)),
                       (arrays["x_test"], arrays["y_test"].astype(np.int64)), DATA_SEED,
                       val_fraction=VAL_FRACTION)
    train_x = splits["train"][0].float() / 255.0
    mean, std = train_x.mean(), train_x.std()  # train statistics only
    return {name: (((x.float() / 255.0 - mean) / std).unsqueeze(1), y) for name, (x, y) in splits.items()}


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),   # 28 -> 24 -> 12
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),  # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


@dataclass(frozen=True)
class CnnFmnist(Task):
    """Task object of ``cnn_fmnist`` (see the module docstring)."""

    def check_available(self) -> None:
        cache = data_dir() / "fashion_mnist_v1.npz"
        if not cache.is_file() and _source_dir() is None:
            raise TaskUnavailable(INSTALL_HINT)

    def build(self, seed: int) -> ClassifierInstance:
        self.check_available()
        return ClassifierInstance(model=init_model(seed, _cnn), seed=seed, splits=_splits(), batch_size=BATCH_SIZE)


def make_task() -> CnnFmnist:
    return CnnFmnist(
        name="cnn_fmnist",
        description=("CNN 2 conv + 2 fc (185k) on Fashion-MNIST (57k/3k/10k; Debian dataset-fashion-mnist); "
                     "metric accuracy"),
        metric="accuracy",
        higher_is_better=True,
        zero_install=False,
        budgets={"standard": Budget(steps=1300, eval_every=130)},
    )
