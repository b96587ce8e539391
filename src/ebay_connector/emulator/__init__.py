"""A faithful local emulator of eBay's OAuth / identity service, for tests and benchmarks.

See docs/emulator.md. ``Emulator`` is the state, ``create_app`` its ASGI app, ``EmulatorServer``
runs it on loopback, ``Faults`` makes it misbehave on purpose.
"""

from ebay_connector.emulator.app import create_app
from ebay_connector.emulator.serve import DEFAULT_PORT, EmulatorServer, run
from ebay_connector.emulator.state import Emulator
from ebay_connector.emulator.store import App, User
from ebay_connector.emulator.wire import Call, Faults

__all__ = [
    "DEFAULT_PORT",
    "App",
    "Call",
    "Emulator",
    "EmulatorServer",
    "Faults",
    "User",
    "create_app",
    "run",
]
