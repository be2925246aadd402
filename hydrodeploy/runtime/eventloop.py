"""The event loop node and client processes run on.

uvloop (libuv, in C) when it can be imported: its sockets, callbacks and timers cost a fraction of
the pure-Python asyncio loop's, and on the light nodes of a scaled deployment the event loop is a
large part of every message's CPU. Without it (an SSH host whose bundle's extension does not load,
``HYDRODEPLOY_EVENT_LOOP=asyncio``) the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "HYDRODEPLOY_EVENT_LOOP"


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop's name and its factory (None: asyncio's default)."""
    if os.environ.get(ENV, "uvloop") == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop available."""
    _, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
