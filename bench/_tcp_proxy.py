"""A TCP proxy in front of PostgreSQL that ``soak.py`` cuts and restores.

The machine's real PostgreSQL is never stopped: the product's processes are pointed at the
proxy's port instead, and :meth:`TcpProxy.cut` makes the database vanish for them — every open
connection is reset at once and new ones are closed on accept, as a stopped server's port would.
:meth:`TcpProxy.restore` lets connections through again. The proxy runs its own event loop in a
daemon thread, so it keeps forwarding while the benchmark's loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

CHUNK = 64 * 1024
CALL_TIMEOUT_S = 10.0


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` / ``restore()`` from any thread."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._cut = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_S)
        self._loop.close()

    def url(self, database_url: str) -> str:
        """``database_url`` (a postgresql:// URL of the target) routed through this proxy."""
        parsed = make_url(database_url.replace("postgres://", "postgresql://", 1))
        return parsed.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def cut(self) -> None:
        """The database is gone: reset every open connection, refuse new ones."""
        self._call(self._do_cut())

    def restore(self) -> None:
        """The database is back: new connections are forwarded again."""
        self._call(self._do_restore())

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _do_cut(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    async def _do_restore(self) -> None:
        self._cut = False

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _abort(writer)
            return
        if self._cut:  # cut while we were connecting upstream
            _abort(writer)
            _abort(up_writer)
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                _abort(w)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (RST, no graceful FIN): what the client sees when the server dies."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
