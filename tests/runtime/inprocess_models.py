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
