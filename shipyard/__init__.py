"""Shipyard: the production layer for AI features."""

from .config import Config, load_config
from .errors import ConfigError, ShipyardError
from .runtime import Gateway, InvokeResult, Reply, StreamReply

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Gateway",
    "InvokeResult",
    "Reply",
    "ShipyardError",
    "StreamReply",
    "__version__",
    "load_config",
]
