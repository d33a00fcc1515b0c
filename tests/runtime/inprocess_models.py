"""In-process models used by the python-provider tests."""

import asyncio
import threading

calls: list[dict] = []


def echo(request, prefix="echo"):
    calls.append(request)
    return f"{prefix}: {request['messages'][-1]['content']} ({request['model']}, {threading.current_thread().name != 'MainThread'})"


async def async_json(request):
    await asyncio.sleep(0)
    return {"content": '{"category": "billing"}', "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def broken(request):
    raise RuntimeError("model file is corrupt")


def wrong_type(request):
    return 42


def vectors(request):
    items = request["input"] if isinstance(request["input"], list) else [request["input"]]
    return [[float(len(x)), 1.0] for x in items]


def sleepy(request):
    import time

    time.sleep(1.5)
    return "too late"


async def slow_to_cancel(request):
    """Answers after 1 s; when cancelled, takes 0.3 s to clean up (as an upstream slow to close)."""
    try:
        await asyncio.sleep(1.0)
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.sleep(0.3))
        raise
    return "slow"


async def quick(request):
    await asyncio.sleep(0.05)
    return "quick"
