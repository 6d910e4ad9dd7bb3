"""tunefree: optimizers that adapt their own step size, and a harness that measures the tuning they save."""

from tunefree.optim._core import NonFiniteError
from tunefree.optim.agd import AGD
from tunefree.optim.gala import GALA
from tunefree.optim.momo import MoMo, MoMoAdam
from tunefree.optim.registry import (
    OptimizerInfo,
    available_optimizers,
    create_optimizer,
    get_optimizer_info,
)
from tunefree.optim.rsgdm import RSGDM
from tunefree.optim.smes import SMES, AlphaSchedule
from tunefree.optim.wrappers import unwrap_optimizer

__version__ = "0.1.0"

__all__ = [
    "AGD",
    "AlphaSchedule",
    "GALA",
    "MoMo",
    "MoMoAdam",
    "NonFiniteError",
    "OptimizerInfo",
    "RSGDM",
    "SMES",
    "available_optimizers",
    "create_optimizer",
    "get_optimizer_info",
    "unwrap_optimizer",
    "__version__",
]
