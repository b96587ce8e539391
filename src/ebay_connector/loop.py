"""The event loop every command runs on: uvloop where available, else asyncio's own.

The server and the worker spend much of their CPU in the event loop and its socket calls (see
docs/decisions.md, "uvloop and httptools"); the benchmarks in bench/ run on this same loop so
that they measure what the product runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the product's loop."""
    with asyncio.Runner(loop_factory=factory()) as runner:
        return runner.run(coro)
