"""The runtime: Call, the pipeline of stages, resilience, and the Gateway that ties them together."""

from .call import Attempt, Call, ChunkStream
from .gateway import Gateway, InvokeResult, Reply, StreamReply
from .resilience import Backoff, BreakerState, CircuitBreaker

__all__ = [
    "Attempt",
    "Backoff",
    "BreakerState",
    "Call",
    "ChunkStream",
    "CircuitBreaker",
    "Gateway",
    "InvokeResult",
    "Reply",
    "StreamReply",
]
