"""The local API (R11) on aiohttp: the routes, answers and bearer token of agent/api.py's ApiServer.

GET /v1/status; POST /v1/suspend, /v1/restore, /v1/hold, /v1/breaker/reset with a JSON object.
Every request is checked against the token first (401), then its body (400), then its path
(404); an enforcement error or a missing field is a 400 with {"error": ...}. The token is
compared in constant time and never written to a log: the access log here redacts it, and
aiohttp's own loggers get the same filter (server.py).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..enforcer import EnforcementError

log = logging.getLogger("rackwarden.api")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiEnforcer(Protocol):
    """What the API calls on the enforcer."""

    def status(self) -> dict[str, Any]: ...
    async def suspend(self, server_id: str, reason: str, note: str, actor: str) -> dict[str, Any]: ...
    async def restore(self, server_id: str, actor: str, reason: str | None = None) -> dict[str, Any]: ...
    def hold(self, server_id: str, seconds: float, note: str, actor: str) -> dict[str, Any]: ...
    def reset_breaker(self, switch: str, actor: str) -> None: ...


def _reply(code: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=code, body=json.dumps(doc, ensure_ascii=False).encode(),
                        content_type="application/json", charset="utf-8")


def routes(e: ApiEnforcer) -> dict[str, Handler]:
    async def suspend(d: dict[str, Any]) -> dict[str, Any]:
        return await e.suspend(str(d["server"]), str(d["reason"]), str(d.get("note", "")), str(d.get("actor", "api")))

    async def restore(d: dict[str, Any]) -> dict[str, Any]:
        return await e.restore(str(d["server"]), str(d.get("actor", "api")), d.get("reason"))

    async def hold(d: dict[str, Any]) -> dict[str, Any]:
        return e.hold(str(d["server"]), float(d["seconds"]), str(d.get("note", "")), str(d.get("actor", "api")))

    async def breaker_reset(d: dict[str, Any]) -> dict[str, Any]:
        e.reset_breaker(str(d["switch"]), str(d.get("actor", "api")))
        return e.status()

    return {"/v1/suspend": suspend, "/v1/restore": restore, "/v1/hold": hold, "/v1/breaker/reset": breaker_reset}


class Redactor:
    """Replaces the token wherever a client put it (a query string, a garbled request line)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, text: str) -> str:
        return text.replace(self.token, "<api token>") if self.token else text


def add_api(app: web.Application, enforcer: ApiEnforcer, token: str, redact: Redactor) -> None:
    expected = f"Bearer {token}".encode()
    posts = routes(enforcer)

    def authorised(request: web.Request) -> bool:
        got = request.headers.get("Authorization", "")
        # Constant time: how long a wrong token takes must not tell how much of it was right.
        return hmac.compare_digest(got.encode(), expected)

    async def get(request: web.Request) -> web.Response:
        if not authorised(request):
            return _reply(401, {"error": "missing or wrong bearer token"})
        if request.path_qs == "/v1/status":
            return _reply(200, enforcer.status())
        return _reply(404, {"error": f"no such endpoint {redact(request.path_qs)}"})

    async def post(request: web.Request) -> web.Response:
        if not authorised(request):
            return _reply(401, {"error": "missing or wrong bearer token"})
        try:
            raw = await request.read()
            doc = json.loads(raw or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return _reply(400, {"error": f"bad request body: {exc}"})
        handler = posts.get(request.path_qs)
        if handler is None:
            return _reply(404, {"error": f"no such endpoint {redact(request.path_qs)}"})
        try:
            return _reply(200, await handler(doc))
        except (EnforcementError, KeyError, ValueError) as exc:
            return _reply(400, {"error": str(exc)})

    app.router.add_get("/v1/{tail:.*}", get, allow_head=False)
    app.router.add_post("/v1/{tail:.*}", post)
