"""Running the emulator: in a background thread for tests, or blocking for a standalone process.

    with EmulatorServer(Emulator()) as server:      # 127.0.0.1, a free port
        httpx.post(server.base_url + "/identity/v1/oauth2/token", ...)

    python -m ebay_connector.emulator --port 8765 \\
        --app MyApp-PRD-1 my-secret My_RuName http://127.0.0.1:8000/ebay/callback --user seller1
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

import uvicorn

from ebay_connector.emulator.app import EmulatorApp, HangRelease, create_app
from ebay_connector.emulator.state import Emulator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
START_TIMEOUT_S = 10.0
# Hung requests are released at shutdown, so this only bounds a handler that misbehaves.
SHUTDOWN_GRACE_S = 5
BACKLOG = 2048
# uvicorn's default (5 s) closes idle keep-alive connections while a busy benchmark client is
# about to reuse them, which surfaces as spurious ReadErrors; eBay's edge keeps them longer.
KEEP_ALIVE_S = 75


class _Server(uvicorn.Server):
    """uvicorn's server, but shutdown first wakes requests held by a ``hang`` fault, so
    stopping never waits for the 300 s hang bound."""

    def __init__(self, config: uvicorn.Config, hangs: HangRelease) -> None:
        super().__init__(config)
        self._hangs = hangs

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._hangs.release()
        await super().shutdown(sockets=sockets)


def _config(app: EmulatorApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",  # no websocket stack: nothing to import, nothing to warn
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmulatorServer:
    """Serves an emulator on loopback from a daemon thread; a context manager.

    ``port=0`` binds a free port before the thread starts, so ``base_url`` is known at once.
    """

    def __init__(
        self,
        emulator: Emulator | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.emulator = emulator if emulator is not None else Emulator()
        self.app = create_app(self.emulator)
        self.host = host
        self.port = port
        self._log_level = log_level
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return _url(self.host, self.port)

    def start(self) -> EmulatorServer:
        if self._thread is not None:
            raise RuntimeError("EmulatorServer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on accepted sockets
        # whose proto says TCP (see docs/decisions.md, "TCP_NODELAY on the emulator's socket").
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = _config(self.app, self.host, self.port, self._log_level)
        self._server = _Server(config, self.app.hangs)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ebay-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start on {self.base_url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; in-flight hangs are answered 504 first."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            self.app.hangs.release()
            server.should_exit = True
            thread.join(SHUTDOWN_GRACE_S + 5)
            if thread.is_alive():
                server.force_exit = True
                thread.join(5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run(
    emulator: Emulator,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
) -> None:
    """Serve until interrupted (Ctrl+C / SIGTERM); for a standalone CLI command.

    Shutdown is graceful either way; uvicorn re-raises the signal afterwards, so SIGTERM ends
    the process with that signal, and Ctrl+C's KeyboardInterrupt is swallowed here.
    """
    app = create_app(emulator)
    with contextlib.suppress(KeyboardInterrupt):
        _Server(_config(app, host, port, log_level), app.hangs).run()
