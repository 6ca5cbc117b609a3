"""agent/api.py's ApiServer interface (start(loop) / stop() / port / scheme) over server.WebServer.

For callers that drive the daemon's loop from another thread (the API's existing tests); the
daemon itself awaits WebServer.start() on its own loop. With this, agent/api.py can shrink to
its token rules (ensure_token, TOKEN_FORM, ApiTokenError) plus `from .web.compat import ApiServer`.
"""

from __future__ import annotations

import asyncio

from ..webauth import WebConfig
from .api import ApiEnforcer, Redactor
from .server import WebServer

_TIMEOUT_S = 30.0


class ApiServer:
    def __init__(self, enforcer: ApiEnforcer, *, listen: str, port: int, token: str,
                 web_config: WebConfig | None = None):
        self._server = WebServer(enforcer, listen=listen, port=port, token=token, web_config=web_config)
        self._redact = Redactor(token)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def scheme(self) -> str:
        return self._server.scheme

    @property
    def port(self) -> int:
        return self._server.port

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind on `loop`, which runs in another thread; raises what WebServer.start() raises."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("on the loop's own thread: await WebServer.start() instead")
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._server.start(), loop).result(timeout=_TIMEOUT_S)

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=_TIMEOUT_S)
