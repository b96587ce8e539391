"""Benchmark async HTTP client transports for many concurrent small form POSTs.

Models the token-refresh worker: ``POST /identity/v1/oauth2/token`` with an
``application/x-www-form-urlencoded`` body and ``Authorization: Basic ...``, answered
with a ~900-byte JSON document after a fixed server-side latency.

The target server (a minimal ASGI app under uvicorn, 127.0.0.1 on a free port) runs in a
separate process so that ``time.process_time()`` in this process measures client CPU
only. The client variants run one after another in this process, each with a warm-up:

* ``httpx-default``        ``httpx.AsyncClient()`` (httpcore transport, default limits:
                           max_connections=100, max_keepalive_connections=20)
* ``httpx-pool=C``         httpcore, max_connections = max_keepalive = concurrency
* ``httpx-pool=2C``        httpcore, max_connections = max_keepalive = 2 * concurrency
* ``httpx-pool=C/ka=20``   httpcore, max_connections = concurrency, keep-alive left at 20
* ``httpx-aiohttp``        ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(...))``
* ``aiohttp``              raw ``aiohttp.ClientSession`` (reference)

Usage (from the repository root)::

    .venv/bin/python bench/client_transport.py
    .venv/bin/python bench/client_transport.py --concurrency 32 --json

What to look for (httpx 0.28.1 / httpcore 1.0.9): with ``max_keepalive_connections`` below the
concurrency, httpcore closes a connection after almost every response (its keep-alive check
counts all connections, not idle ones), so nearly every request opens a new TCP connection;
with ``max_keepalive_connections`` >= concurrency (2 × concurrency too, so not a pool-size
question) the pool hands one idle connection to several waiting requests, the losers retry
with ``ConnectionNotAvailable`` and each retry rescans the pool. That is load-dependent: once
the client CPU saturates (concurrency 64 on 2 cores; not at 32) it feeds on itself, CPU per
request explodes and throughput collapses (encode/httpcore#1035, pydantic/httpx2#974, #1075).

The run is bounded (``--variant-timeout-s`` per variant, warm-up included), only talks to
127.0.0.1, and always stops the server process on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp

TOKEN_PATH = "/identity/v1/oauth2/token"
SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 5.0

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Sender = Callable[[], Awaitable[None]]
SenderFactory = Callable[[], contextlib.AbstractAsyncContextManager[Sender]]


# --------------------------------------------------------------------------- server


def token_response_body() -> bytes:
    """A ~900-byte JSON answer shaped like eBay's refresh-token grant response."""
    payload: dict[str, Any] = {
        "access_token": "v^1.1#i^1#p^3#r^1#f^0#I^3#t^" + "H4sIAAAAAAAAAOVZf2wbVx" * 36,
        "expires_in": 7200,
        "token_type": "User Access Token",
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def make_app(latency_s: float) -> AsgiApp:
    body = token_response_body()
    ok_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    bad_body = b'{"error":"invalid_request"}'
    bad_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(bad_body)).encode()),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        request_body = b"".join(chunks)
        headers = dict(scope["headers"])
        valid = (
            scope["method"] == "POST"
            and scope["path"] == TOKEN_PATH
            and headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")
            and headers.get(b"authorization", b"").startswith(b"Basic ")
            and b"grant_type=refresh_token" in request_body
        )
        await asyncio.sleep(latency_s)
        status, out_headers, out_body = (
            (200, ok_headers, body) if valid else (400, bad_headers, bad_body)
        )
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": out_body})

    return app


def serve(conn: Connection, latency_s: float, parent_pid: int, max_lifetime_s: float) -> None:
    """Server process entry point: bind a free loopback port, report it, serve."""
    import uvicorn

    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is IPPROTO_TCP; with proto 0 uvicorn's separate header/body writes hit Nagle +
    # delayed ACK and every response gains ~40 ms on Linux loopback.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    config = uvicorn.Config(
        make_app(latency_s),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=120,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    conn.send(sock.getsockname()[1])
    conn.close()
    deadline = time.monotonic() + max_lifetime_s

    async def watchdog() -> None:
        # Stop when the parent disappears or the lifetime is exceeded (no orphan servers).
        while not server.should_exit:
            await asyncio.sleep(0.5)
            if os.getppid() != parent_pid or time.monotonic() > deadline:
                server.should_exit = True

    async def main() -> None:
        guard = asyncio.create_task(watchdog())
        try:
            await server.serve(sockets=[sock])
        finally:
            guard.cancel()

    asyncio.run(main())


@contextlib.contextmanager
def running_server(latency_s: float, max_lifetime_s: float) -> Iterator[tuple[str, int]]:
    """Start the target server in a separate process; yield (base_url, pid)."""
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=serve,
        args=(child_conn, latency_s, os.getpid(), max_lifetime_s),
        name="bench-target-server",
        daemon=True,
    )
    proc.start()
    child_conn.close()
    try:
        if not parent_conn.poll(SERVER_START_TIMEOUT_S):
            raise RuntimeError("target server did not report its port in time")
        port = int(parent_conn.recv())
        wait_until_accepting("127.0.0.1", port, SERVER_START_TIMEOUT_S)
        assert proc.pid is not None
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(SERVER_STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join(SERVER_STOP_TIMEOUT_S)


def wait_until_accepting(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def process_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of another process (Linux /proc), None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Workload:
    url: str
    form: dict[str, str]
    headers: dict[str, str]
    timeout_s: float


def make_workload(base_url: str, timeout_s: float) -> Workload:
    basic = base64.b64encode(b"ClientId-PRD-0123456789abcdef:PRD-0123456789ab-cdef-0123").decode()
    return Workload(
        url=base_url + TOKEN_PATH,
        form={
            "grant_type": "refresh_token",
            "refresh_token": "v^1.1#i^1#r^1#I^3#f^0#p^3#t^Ul4xMF8" + "x" * 64,
            "scope": " ".join(
                [
                    "https://api.ebay.com/oauth/api_scope",
                    "https://api.ebay.com/oauth/api_scope/sell.inventory",
                    "https://api.ebay.com/oauth/api_scope/sell.account.readonly",
                ]
            ),
        },
        headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        timeout_s=timeout_s,
    )


class BadResponseError(Exception):
    pass


def httpx_factory(w: Workload, make_client: Callable[[], httpx.AsyncClient]) -> SenderFactory:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[Sender]:
        async with make_client() as client:

            async def send() -> None:
                response = await client.post(w.url, data=w.form, headers=w.headers)
                if response.status_code != 200 or "access_token" not in response.json():
                    raise BadResponseError(response.status_code)

            yield send

    return factory


def aiohttp_factory(w: Workload) -> SenderFactory:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[Sender]:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=w.timeout_s, sock_connect=w.timeout_s, sock_read=w.timeout_s
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def send() -> None:
                async with session.post(w.url, data=w.form, headers=w.headers) as response:
                    payload = await response.json()
                    if response.status != 200 or "access_token" not in payload:
                        raise BadResponseError(response.status)

            yield send

    return factory


@dataclass(frozen=True)
class Variant:
    name: str
    httpx_api: bool
    description: str
    factory: SenderFactory


def build_variants(w: Workload, concurrency: int) -> list[Variant]:
    c = concurrency
    timeout = httpx.Timeout(w.timeout_s)

    def httpx_pool(max_conn: int | None, max_keepalive: int | None) -> SenderFactory:
        limits = httpx.Limits(max_connections=max_conn, max_keepalive_connections=max_keepalive)
        return httpx_factory(w, lambda: httpx.AsyncClient(timeout=timeout, limits=limits))

    def httpx_aiohttp_client() -> httpx.AsyncClient:
        transport = httpx_aiohttp.AiohttpTransport(limits=httpx.Limits(max_connections=c))
        return httpx.AsyncClient(transport=transport, timeout=timeout)

    return [
        Variant(
            "httpx-default",
            True,
            "httpx.AsyncClient() (max_connections=100, max_keepalive=20)",
            httpx_factory(w, lambda: httpx.AsyncClient(timeout=timeout)),
        ),
        Variant(
            "httpx-pool=C",
            True,
            f"httpx, Limits(max_connections={c}, max_keepalive_connections={c})",
            httpx_pool(c, c),
        ),
        Variant(
            "httpx-pool=2C",
            True,
            f"httpx, Limits(max_connections={2 * c}, max_keepalive_connections={2 * c})",
            httpx_pool(2 * c, 2 * c),
        ),
        Variant(
            "httpx-pool=C/ka=20",
            True,
            f"httpx, Limits(max_connections={c}, max_keepalive_connections=20)",
            httpx_pool(c, 20),
        ),
        Variant(
            "httpx-aiohttp",
            True,
            f"httpx.AsyncClient(transport=AiohttpTransport(limits=Limits(max_connections={c})))",
            httpx_factory(w, httpx_aiohttp_client),
        ),
        Variant(
            "aiohttp",
            False,
            "aiohttp.ClientSession() (TCPConnector limit=100), reference",
            aiohttp_factory(w),
        ),
    ]


# --------------------------------------------------------------------------- driver


@dataclass
class Result:
    name: str
    description: str
    httpx_api: bool
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    wall_s: float
    rps: float
    cpu_ms_per_req: float
    client_cpu_pct: float
    server_cpu_pct: float | None
    p50_ms: float | None
    p99_ms: float | None
    timed_out: bool
    warmup_errors: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Batch:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    timed_out: bool = False

    @property
    def done(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


async def drive(send: Sender, total: int, concurrency: int, deadline: float) -> Batch:
    """Run ``total`` requests with ``concurrency`` workers, stopping at ``deadline``."""
    batch = Batch()
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < total:
            issued += 1
            started = time.perf_counter()
            try:
                await send()
            except Exception as exc:
                batch.errors[type(exc).__name__] += 1
            else:
                batch.latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline):
            await asyncio.gather(*tasks)
    except TimeoutError:
        batch.timed_out = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return batch


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_variant(variant: Variant, args: argparse.Namespace, server_pid: int) -> Result:
    budget_end = time.monotonic() + args.variant_timeout_s
    gc.collect()
    notes: list[str] = []
    async with variant.factory() as send:
        warm = await drive(send, args.warmup, args.concurrency, budget_end - time.monotonic())
        gc.collect()
        server_cpu0 = process_cpu_s(server_pid)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        remaining = max(0.0, budget_end - time.monotonic())
        batch = await drive(send, args.requests, args.concurrency, remaining)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server_cpu1 = process_cpu_s(server_pid)
    if warm.timed_out or batch.timed_out:
        notes.append(f"variant budget of {args.variant_timeout_s:g}s exhausted; partial figures")
    done = max(batch.done, 1)
    latencies = sorted(batch.latencies)
    server_pct = (
        None
        if server_cpu0 is None or server_cpu1 is None
        else 100 * (server_cpu1 - server_cpu0) / wall
    )
    return Result(
        name=variant.name,
        description=variant.description,
        httpx_api=variant.httpx_api,
        requests=batch.done,
        ok=len(batch.latencies),
        errors=sum(batch.errors.values()),
        error_kinds=dict(batch.errors),
        wall_s=wall,
        rps=batch.done / wall if wall > 0 else 0.0,
        cpu_ms_per_req=1000 * cpu / done,
        client_cpu_pct=100 * cpu / wall if wall > 0 else 0.0,
        server_cpu_pct=server_pct,
        p50_ms=None if not latencies else 1000 * (percentile(latencies, 50) or 0.0),
        p99_ms=None if not latencies else 1000 * (percentile(latencies, 99) or 0.0),
        timed_out=warm.timed_out or batch.timed_out,
        warmup_errors=sum(warm.errors.values()),
        notes=notes,
    )


def successful_rps(r: Result) -> float:
    """Throughput of successful requests only (errors do not count as work done)."""
    return r.ok / r.wall_s if r.wall_s > 0 else 0.0


def pick_best_httpx(results: list[Result], tolerance: float = 0.03) -> Result | None:
    """Best httpx-API variant: highest successful req/s; within ``tolerance``, least CPU."""
    candidates = [r for r in results if r.httpx_api and r.name != "httpx-default"]
    if not candidates:
        return None
    top = max(successful_rps(r) for r in candidates)
    close = [r for r in candidates if successful_rps(r) >= top * (1 - tolerance)]
    return min(close, key=lambda r: r.cpu_ms_per_req)


def ratio_summary(results: list[Result]) -> dict[str, Any] | None:
    default = next((r for r in results if r.name == "httpx-default"), None)
    best = pick_best_httpx(results)
    if default is None or best is None or successful_rps(default) == 0:
        return None
    return {
        "best": best.name,
        "baseline": default.name,
        "rps_ratio": successful_rps(best) / successful_rps(default),
        "cpu_per_req_ratio": default.cpu_ms_per_req / best.cpu_ms_per_req,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result], args: argparse.Namespace, env: dict[str, str]) -> None:
    print(
        f"{args.requests} form POSTs, concurrency {args.concurrency}, server latency "
        f"{args.latency_ms:g} ms, warm-up {args.warmup}, timeout {args.timeout_s:g} s  "
        f"[{', '.join(f'{k} {v}' for k, v in env.items())}]"
    )
    ideal = args.concurrency / (args.latency_ms / 1000) if args.latency_ms > 0 else float("inf")
    print(f"latency-bound ceiling: {ideal:.0f} req/s")
    header = (
        f"{'variant':<20} {'req/s':>7} {'wall s':>7} {'CPU ms/req':>10} {'cli CPU%':>8} "
        f"{'srv CPU%':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        flag = " (budget hit)" if r.timed_out else ""
        print(
            f"{r.name:<20} {r.rps:>7.0f} {r.wall_s:>7.2f} {r.cpu_ms_per_req:>10.2f} "
            f"{r.client_cpu_pct:>8.0f} {fmt(r.server_cpu_pct, '.0f'):>8} {r.errors:>6} "
            f"{fmt(r.p50_ms, '.1f'):>7} {fmt(r.p99_ms, '.1f'):>8}{flag}"
        )
    for r in results:
        if r.error_kinds:
            kinds = ", ".join(f"{k}×{v}" for k, v in sorted(r.error_kinds.items()))
            print(f"  {r.name}: errors {kinds}")
    print("variants:")
    for r in results:
        print(f"  {r.name:<20} {r.description}")
    summary = ratio_summary(results)
    if summary is None:
        print("ratio: n/a (need httpx-default and another httpx-API variant)")
    else:
        print(
            f"ratio: {summary['rps_ratio']:.1f}× req/s, {summary['cpu_per_req_ratio']:.1f}× less "
            f"CPU/req ({summary['best']} vs {summary['baseline']})"
        )


def environment() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    # sniffio matters: httpcore 1.0.x retries a failing ``import sniffio`` on every lock/event
    # setup when it is missing (anyio >= 4.11 no longer pulls it in), costing client CPU.
    names = ("httpx", "httpcore", "httpx-aiohttp", "aiohttp", "anyio", "sniffio", "uvicorn")
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        **{name: version(name) for name in names},
    }


async def run_all(args: argparse.Namespace, base_url: str, server_pid: int) -> list[Result]:
    workload = make_workload(base_url, args.timeout_s)
    variants = build_variants(workload, args.concurrency)
    if args.variants:
        wanted = set(args.variants.split(","))
        unknown = wanted - {v.name for v in variants}
        if unknown:
            raise SystemExit(f"unknown variant(s): {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v.name in wanted]
    results = []
    _Shutdown.task = asyncio.current_task()
    try:
        for variant in variants:
            if not args.json:
                print(f"running {variant.name} ...", file=sys.stderr, flush=True)
            results.append(await run_variant(variant, args, server_pid))
    finally:
        _Shutdown.task = None
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=100.0, help="server-side delay")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests/variant")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent workers")
    parser.add_argument("--warmup", type=int, default=None, help="default: 2 × concurrency")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="client timeouts (httpx 5)")
    parser.add_argument(
        "--variant-timeout-s", type=float, default=60.0, help="wall budget per variant"
    )
    parser.add_argument("--variants", default="", help="comma-separated subset of variant names")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 2 * args.concurrency
    if args.requests < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--requests and --concurrency must be >= 1, --latency-ms >= 0")
    return args


class _Shutdown:
    """SIGTERM handling: cancel the running benchmark cleanly, else unwind as Ctrl-C would."""

    task: asyncio.Task[Any] | None = None

    @classmethod
    def on_sigterm(cls, signum: int, frame: object) -> None:
        task = cls.task
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Make SIGTERM unwind through ``finally`` so the server process is always stopped.
    signal.signal(signal.SIGTERM, _Shutdown.on_sigterm)
    env = environment()
    server_lifetime = 60 + 7 * (args.variant_timeout_s + 5)
    try:
        with running_server(args.latency_ms / 1000, server_lifetime) as (base_url, server_pid):
            results = asyncio.run(run_all(args, base_url, server_pid))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; target server stopped", file=sys.stderr)
        return 130
    if args.json:
        report = {
            "config": {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "latency_ms": args.latency_ms,
                "warmup": args.warmup,
                "timeout_s": args.timeout_s,
            },
            "environment": env,
            "results": [asdict(r) for r in results],
            "ratio": ratio_summary(results),
        }
        print(json.dumps(report))
    else:
        print_table(results, args, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
