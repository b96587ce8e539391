"""Running the product: the server, the worker, the demo and the standalone emulator."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from ebay_connector.cli.console import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logging,
    exit_with,
    out,
    run,
    settings,
    with_runtime,
)
from ebay_connector.core import quota
from ebay_connector.errors import UsageError

if TYPE_CHECKING:
    from ebay_connector.runtime import Runtime
    from ebay_connector.service.worker import CycleStatus

# The emulator's standalone port; `ebay_connector.emulator.serve.DEFAULT_PORT` (kept equal by a
# test) is not imported here because importing the emulator costs what --help must not.
EMULATOR_PORT = 8765


def demo() -> None:
    """Start the product on its embedded defaults, with the emulator and eight demo accounts."""
    from ebay_connector import serve

    conf = settings()
    configure_logging(conf)
    run(serve.run(conf, with_demo=True, with_worker=True, say=out.print))


def serve_command(
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run the worker.")] = False,
) -> None:
    """Start the HTTP server (and, unless --no-worker, the worker in the same process)."""
    from ebay_connector import serve

    conf = settings()
    configure_logging(conf)
    run(serve.run(conf, with_demo=False, with_worker=not no_worker, say=out.print))


def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit 0/1.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve this worker's metrics on http://127.0.0.1:PORT/metrics (default: off).",
        ),
    ] = None,
) -> None:
    """Refresh every due account; with --once, exit 1 unless the cycle was ok."""
    from ebay_connector.service import metrics
    from ebay_connector.service.worker import CycleStatus

    async def body(runtime: Runtime) -> CycleStatus:
        configure_logging(runtime.settings)
        if metrics_port is None:
            return await _work(runtime, once)
        with metrics.serve_process_metrics(runtime.metrics, metrics_port) as url:
            out.print(f"worker metrics on {url}")
            return await _work(runtime, once)

    status = with_runtime(body)
    exit_with(EXIT_OK if status is CycleStatus.OK else EXIT_FAILED)


async def _work(runtime: Runtime, once: bool) -> CycleStatus:
    from ebay_connector.service.worker import CycleStatus

    w = runtime.worker()
    if once:
        report = await w.run_once()
        out.print(
            f"cycle {report.status.value}: due {report.counts.due}, refreshed "
            f"{report.counts.refreshed}, failed {report.counts.failed}, needs reconnect "
            f"{report.counts.needs_reconnect}, waiting for reconnect "
            f"{report.counts.waiting_reconnect}"
        )
        return report.status
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await w.run(stop)
    return CycleStatus.OK


def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = EMULATOR_PORT,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    client_id: Annotated[str, typer.Option(help="App ID to register.")] = "",
    client_secret: Annotated[str, typer.Option(help="Cert ID to register.")] = "",
    ru_name: Annotated[str, typer.Option(help="RuName to register.")] = "",
    accept_url: Annotated[str, typer.Option(help="Where consent redirects.")] = "",
    decline_url: Annotated[str | None, typer.Option(help="Where a decline goes.")] = None,
    user: Annotated[list[str] | None, typer.Option(help="Add an eBay user (repeatable).")] = None,
    latency_ms: Annotated[int, typer.Option(min=0, help="Latency added to every answer.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the error_rate draws.")] = 0,
    daily_limit: Annotated[
        list[str] | None,
        typer.Option(help="GRANT=N daily limit, e.g. refresh_token=50000 (repeatable)."),
    ] = None,
) -> None:
    """Run the eBay identity emulator standalone (see docs/emulator.md)."""
    from ebay_connector import emulator as emulation

    given = [client_id, client_secret, ru_name, accept_url]
    if any(given) and not all(given):
        raise UsageError("--client-id, --client-secret, --ru-name and --accept-url go together")
    limits: dict[str, int] = {}
    for item in daily_limit or []:
        grant, _, number = item.partition("=")
        if grant not in quota.DEFAULT_DAILY_LIMITS or not number.isdigit():
            raise UsageError(
                f"--daily-limit {item!r}: expected GRANT=N with GRANT one of "
                f"{', '.join(quota.DEFAULT_DAILY_LIMITS)}"
            )
        limits[grant] = int(number)
    emu = emulation.Emulator(seed=seed, daily_limits=limits or None)
    if all(given):
        emu.register_app(
            client_id=client_id,
            client_secret=client_secret,
            ru_name=ru_name,
            accept_url=accept_url,
            decline_url=decline_url,
        )
    for name in user or []:
        emu.add_user(name)
    if latency_ms:
        emu.set_faults(emulation.Faults(latency_ms=latency_ms))
    out.print(f"eBay identity emulator on http://{host}:{port}")
    emulation.run(emu, host, port)
