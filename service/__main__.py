"""`python -m service [--host H] [--port P] [--model M]`: one uvicorn worker, one model per GPU.

Graceful drain on SIGTERM (what Kubernetes sends before killing a pod):
1. /ready turns 503 at once, so endpoints controllers and load balancers stop routing here;
2. requests keep being served for drain_delay_seconds while they do (routing updates take seconds);
3. the listener closes; everything queued and in flight finishes within drain_timeout_seconds,
   and what could not is answered 503 `shutting_down` in the error envelope, as is every request
   still arriving (its head or body) once that drain is over;
4. the process exits 0. A second SIGTERM, or SIGINT (Ctrl+C), skips the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from service import logs
from service.app import create_app
from service.httpserver import cut_off, server_config
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, drain_delay_s: float) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._drain_delay_s = drain_delay_s
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of whatever the loop thread is doing,
        # often a request's handler: run in a fresh context so that request's id is not on the
        # drain's log lines (nor, through call_soon_threadsafe's copy, on the later ones).
        contextvars.Context().run(self._handle_exit, sig, frame)

    def _handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self._draining
        self._begin_drain()
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)  # SIGINT (Ctrl+C): uvicorn's own behaviour
            return
        # SIGTERM is not recorded for uvicorn to re-raise after shutdown (its default, which ends
        # the process with -15): a completed drain exits 0.
        if not first or self._drain_delay_s <= 0 or self._loop is None:
            self.should_exit = True
            return
        log.info("SIGTERM: not ready; serving %.1fs more before closing", self._drain_delay_s)
        # Signal handlers run between bytecodes of the loop thread: schedule, do not act here.
        loop = self._loop
        loop.call_soon_threadsafe(loop.call_later, self._drain_delay_s, self._close_listener)

    def _begin_drain(self) -> None:
        self._draining = True
        self._runtime.start_draining()

    def _close_listener(self) -> None:
        if self.should_exit:
            return
        log.info("drain delay over: closing the listener, finishing in-flight requests")
        self.should_exit = True

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def shutdown(self, sockets: Any = None) -> None:
        """The batcher's drain starts as the listener closes, not in the lifespan (which uvicorn
        runs only after it has waited for, or cancelled, every handler): so the drain timeout
        ends with each unfinished request answered 503 in the envelope. Requests still arriving
        then (a slow client's body) are answered 503 too (service.httpserver.cut_off), instead
        of holding the shutdown until uvicorn's timeout cancels them with an ERROR line: the
        batcher takes no new work once draining, so they could not have been served."""
        draining = self._runtime.stop_batcher()
        connections = self.server_state.connections
        if draining is None:  # no model (yet): nothing to finish first
            asyncio.get_running_loop().call_soon(cut_off, connections)
        else:
            draining.add_done_callback(lambda _: cut_off(connections))
        await super().shutdown(sockets)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n")[0])
    parser.add_argument("--host", help="bind address (EMBED_HOST)")
    parser.add_argument("--port", type=int, help="HTTP port (EMBED_PORT)")
    parser.add_argument("--model", help="local folder or Hub model id (EMBED_MODEL)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    logs.configure(settings.log_level)
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    config = server_config(app, runtime)
    server = DrainingServer(config, runtime, settings.drain_delay_seconds)

    def stop_on_load_failure() -> None:
        server.should_exit = True

    runtime.on_fatal = stop_on_load_failure
    server.run()
    if runtime.load_error is not None:
        log.error("exiting: the model could not be loaded: %s", runtime.load_error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
