"""`mail-pipeline serve`: the four systems' import APIs and the web page, one ASGI application
on uvicorn, over the same home and Dagster instance as the command line.

Every import it makes is an ordinary import: a run of `import_job` handed to the run queue, which
the Dagster daemon starts when the store's pool allows (one writer), tagged with the API and the
key's name. On the embedded instance the server starts a daemon of its own unless one is already
running for this home (`mail-pipeline ui`); a deployer's daemon serves a deployer's instance.
"""
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from typing import Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mail_pipeline.errors import MailPipelineError
from service.api import errors
from service.api.errors import ApiError
from service.api.uploads import Limits, sweep_incoming

log = logging.getLogger("mail_pipeline.serve")


def create_app(limits: Optional[Limits] = None, dagster_url: str = "http://127.0.0.1:3000",
               private_urls: bool = False) -> FastAPI:
    """The application; the instance is opened when it starts and closed when it stops.
    `private_urls`: imports may name URL sources on loopback or private addresses."""
    from service import jobs, state  # Dagster, on first need (as the command line does)
    from service.api import greenarrow, listmonk, mailcoach, mailrith, page

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.instance = jobs.instance()
        app.state.records = state.records()
        swept = sweep_incoming()
        if swept:
            log.info("removed %d upload(s) left behind by an earlier server", swept)
        try:
            yield
        finally:
            app.state.instance.dispose()
            app.state.records.close()

    app = FastAPI(title="mail-pipeline", lifespan=lifespan, docs_url="/api/docs",
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.limits = limits or Limits()
    app.state.dagster_url = dagster_url.rstrip("/")
    app.state.private_urls = private_urls
    for module in (listmonk, greenarrow, mailcoach, mailrith, page):
        app.include_router(module.router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return errors.render(request.url.path, exc)

    @app.exception_handler(MailPipelineError)
    async def user_error(request: Request, exc: MailPipelineError):
        return errors.render(request.url.path, ApiError(400, str(exc), code="validation_failed"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        text = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail))
        return errors.render(request.url.path, ApiError(exc.status_code, text))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        status = 404 if first.get("loc", ("",))[0] == "path" else 422
        return errors.render(request.url.path, ApiError(
            status, f"invalid {where}: {first.get('msg', 'not accepted')}", field=where))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return errors.render(request.url.path, ApiError(500, "internal error: see the server's log"))

    return app


# --- the daemon ------------------------------------------------------------------------------------

_FRESH_SECONDS = 60


def daemon_running() -> bool:
    """Whether a Dagster daemon serves this home's instance (its run queue heartbeats)."""
    from service import jobs
    inst = jobs.instance()
    try:
        beats = inst.get_daemon_heartbeats()
    finally:
        inst.dispose()
    now = time.time()
    return any(now - beat.timestamp < _FRESH_SECONDS for beat in beats.values())


def start_daemon() -> subprocess.Popen:
    """`dagster-daemon run` on this home's workspace, as `mail-pipeline ui` runs it."""
    from service.instance import dagster_home, workspace_file
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home()))
    return subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(workspace_file()),
                             "--log-level", "warning"],
                            env=env)


class _Server(uvicorn.Server):
    """uvicorn's server, which asks the daemon it started to stop as soon as it is asked to stop
    itself: the daemon's shutdown (its sensors' ticks, its code server) then runs while uvicorn
    finishes the requests in flight, not after."""

    def __init__(self, config, daemon: Optional[subprocess.Popen]) -> None:
        super().__init__(config)
        self.daemon = daemon

    def handle_exit(self, sig, frame) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
        super().handle_exit(sig, frame)


def serve(host: str, port: int, limits: Limits, dagster_url: str, daemon: Optional[bool],
          private_urls: bool = False) -> int:
    """Run the server until SIGTERM or Ctrl-C (uvicorn finishes the requests in flight), and the
    daemon it started with it."""
    from service.instance import deployed
    child = None
    if daemon is None:
        daemon = not deployed() and not daemon_running()
    if daemon:
        child = start_daemon()
    # uvicorn raises the signal it stopped on again once it has shut down; with these handlers
    # that lands here instead of ending the process before the daemon is stopped.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        config = uvicorn.Config(create_app(limits, dagster_url, private_urls), host=host, port=port,
                                access_log=True, log_level="info", timeout_graceful_shutdown=10)
        _Server(config, child).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child is not None:
            child.terminate()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0
