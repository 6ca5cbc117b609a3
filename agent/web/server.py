"""One aiohttp listener on the daemon's event loop: the local API and, when configured, the console.

It listens where the API does (agent.api_listen / api_port) under the same rules: beyond
loopback only over TLS from agent.api_web_config (webauth.check_api_bind_policy, checked again
in start() so no caller can forget it), with webauth.ssl_context's certificate handling. The
session cookies are then marked Secure.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import web

from ..webauth import WebConfig, check_api_bind_policy, ssl_context
from .api import ApiEnforcer, Redactor, add_api
from .console import Console, ConsoleParts

log = logging.getLogger("rackwarden.api")
REDACT = web.AppKey("redact", Redactor)
CONSOLE = web.AppKey("console", Console)
# aiohttp logs bad requests (with their raw first line) here; the token must not get through.
_AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal")


class _RedactFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            # A parse error's traceback quotes the raw request line: kept, as redacted text.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


def build_app(enforcer: ApiEnforcer, token: str, console: ConsoleParts | None = None) -> web.Application:
    """The aiohttp application: /v1/* for the API, the console's pages when `console` is given."""
    redact = Redactor(token)

    @web.middleware
    async def access_log(request: web.Request, handler: Any) -> web.StreamResponse:
        status = 500
        try:
            resp: web.StreamResponse = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            # Our own access log: aiohttp's would print the raw path, token and all.
            log.info("api %s %s %s %d", request.remote, request.method, redact(request.path_qs), status)

    app = web.Application(middlewares=[access_log], client_max_size=64 * 1024)

    async def server_header(request: web.Request, response: web.StreamResponse) -> None:
        # aiohttp would name itself and its version to every client.
        response.headers["Server"] = "rackwarden"

    app.on_response_prepare.append(server_header)
    app[REDACT] = redact
    add_api(app, enforcer, token, redact)
    if console is not None:
        c = Console(console)
        c.add_routes(app)
        app[CONSOLE] = c
    return app


class WebServer:
    """Start and stop the listener; the constructor only records settings."""

    def __init__(self, enforcer: ApiEnforcer, *, listen: str, port: int, token: str,
                 web_config: WebConfig | None = None, console: ConsoleParts | None = None):
        self._enforcer = enforcer
        self._listen = listen
        self._port = port
        self._token = token
        self._web_config = web_config
        self._console = console
        self._runner: web.AppRunner | None = None
        self._filter: _RedactFilter | None = None
        self.app: web.Application | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._web_config is not None and self._web_config.tls is not None else "http"

    @property
    def port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        bare = self._listen.strip("[]")
        host = f"[{bare}]" if ":" in bare else bare
        return f"{self.scheme}://{host}:{self.port}"

    async def start(self) -> None:
        check_api_bind_policy(self._listen, self._web_config)
        wc = self._web_config
        tls: ssl.SSLContext | None = ssl_context(wc.tls) if wc is not None and wc.tls is not None else None
        if self._console is not None:
            self._console.secure_cookies = tls is not None
        self.app = build_app(self._enforcer, self._token, self._console)
        self._filter = _RedactFilter(self.app[REDACT])
        for name in _AIOHTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._listen.strip("[]") or None, self._port, ssl_context=tls,
                           reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("local API%s on %s", " and console" if self._console else "", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._filter is not None:
            for name in _AIOHTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._filter)
            self._filter = None
