"""tunefree: optimizers that adapt their own step size, and a harness that measures the tuning they save."""

from tunefree.monitor import AdaptationWarning, Thresholds, Watcher, watch
from tunefree.optim._core import NonFiniteError
from tunefree.optim.agd import AGD
from tunefree.optim.gala import GALA
from tunefree.optim.momo import MoMo, MoMoAdam
from tunefree.optim.registry import (
    OptimizerInfo,
    available_optimizers,
    create_optimizer,
    get_optimizer_info,
    register_optimizer,
)
from tunefree.optim.rsgdm import RSGDM
from tunefree.optim.smes import SMES, AlphaSchedule

__version__ = "0.1.0"

__all__ = [
    "AGD",
    "AdaptationWarning",
    "AlphaSchedule",
    "GALA",
    "MoMo",
    "MoMoAdam",
    "NonFiniteError",
    "OptimizerInfo",
    "RSGDM",
    "SMES",
    "Thresholds",
    "Watcher",
    "available_optimizers",
    "create_optimizer",
    "get_optimizer_info",
    "register_optimizer",
    "watch",
    "__version__",
]
