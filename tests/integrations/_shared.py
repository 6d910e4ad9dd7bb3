"""Pieces the trainer-integration tests share: loading an example script, and a MoMo that records its losses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tunefree import MoMo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(file_name: str) -> ModuleType:
    """Import ``examples/<file_name>`` as a module (the examples are scripts, not a package)."""
    path = EXAMPLES / file_name
    spec = importlib.util.spec_from_file_location(f"{path.stem}_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


class SpyMoMo(MoMo):
    """MoMo that records the loss each step computed with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fed: list[float] = []

    def update(self, loss, closure):
        self.fed.append(float(loss))
        super().update(loss, closure)
