"""The local HTTP API for operators and the billing system (R11): status, suspend, restore, hold."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .enforcer import EnforcementError, Enforcer

log = logging.getLogger("rackwarden.api")
TOKEN_FILE = "api.token"


def ensure_token(state_dir: Path) -> str:
    """The bearer token, created on first start, readable only by the agent's user."""
    path = state_dir / TOKEN_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class ApiServer:
    """A threaded HTTP server on loopback whose handlers run on the agent's event loop."""

    def __init__(self, enforcer: Enforcer, *, listen: str, port: int, token: str):
        self._enforcer = enforcer
        self._listen = listen
        self._port = port
        self._token = token
        self._server: ThreadingHTTPServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.info("api %s %s", self.address_string(), fmt % args)

            def _reply(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc, ensure_ascii=False).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                got = self.headers.get("Authorization", "")
                ok = hmac.compare_digest(got.encode(), f"Bearer {api._token}".encode())
                if not ok:
                    self._reply(401, {"error": "missing or wrong bearer token"})
                return ok

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if not self._authorised():
                    return
                if self.path == "/v1/status":
                    self._reply(200, api._run(lambda: api._status()))
                else:
                    self._reply(404, {"error": f"no such endpoint {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    doc = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(doc, dict):
                        raise ValueError("body must be a JSON object")
                except ValueError as e:
                    self._reply(400, {"error": f"bad request body: {e}"})
                    return
                handler = api._routes().get(self.path)
                if handler is None:
                    self._reply(404, {"error": f"no such endpoint {self.path}"})
                    return
                try:
                    self._reply(200, api._run(lambda: handler(doc)))
                except (EnforcementError, KeyError, ValueError) as e:
                    self._reply(400, {"error": str(e)})

        self._server = ThreadingHTTPServer((self._listen, self._port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="rackwarden-api", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _run(self, make: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=120)  # type: ignore[arg-type]

    async def _status(self) -> dict[str, Any]:
        return self._enforcer.status()

    def _routes(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        e = self._enforcer

        async def suspend(d: dict[str, Any]) -> dict[str, Any]:
            return await e.suspend(str(d["server"]), str(d["reason"]), str(d.get("note", "")),
                                   str(d.get("actor", "api")))

        async def restore(d: dict[str, Any]) -> dict[str, Any]:
            return await e.restore(str(d["server"]), str(d.get("actor", "api")), d.get("reason"))

        async def hold(d: dict[str, Any]) -> dict[str, Any]:
            return e.hold(str(d["server"]), float(d["seconds"]), str(d.get("note", "")), str(d.get("actor", "api")))

        async def breaker_reset(d: dict[str, Any]) -> dict[str, Any]:
            e.reset_breaker(str(d["switch"]), str(d.get("actor", "api")))
            return e.status()

        return {"/v1/suspend": suspend, "/v1/restore": restore, "/v1/hold": hold,
                "/v1/breaker/reset": breaker_reset}
