"""/metrics with aiohttp on the daemon's event loop, under the exporter-style web config.

The same endpoint the thread-served http.server handler gave: every path and method behind
the password (basic auth from webauth's PasswordCheck), /metrics negotiated as
prometheus_client's own handler does (OpenMetrics by Accept, gzip by Accept-Encoding), / a
link to it, anything else 404, GET and HEAD only; TLS from webauth.ssl_context; the bind
policy (webauth.check_bind_policy) checked again in start() so no caller can forget it.

Scrapes and password checks never run on the loop: some collectors read the ledger, and a
bcrypt costs 50-100 ms, so both go to threads while the loop keeps polling and enforcing.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from ..webauth import (
    MAX_CONCURRENT_BCRYPT,
    WWW_AUTHENTICATE,
    PasswordCheck,
    WebConfig,
    basic_credentials,
    check_bind_policy,
    ssl_context,
)

# The old endpoint's logger: its start line, warnings and debug access lines stay where they were.
log = logging.getLogger("rackwarden.webauth")

T = TypeVar("T")
# A client gets this long for its TLS handshake and for its request (aiohttp's keep-alive
# timer also runs from the connection's start until a request arrives), as before.
REQUEST_TIMEOUT_S = 10.0
# Scrapes building their exposition at once; more wait their turn on the loop. A collector
# stuck on the ledger database thus holds at most this many threads.
MAX_CONCURRENT_SCRAPES = 4
# stop() waits this long for scrapes in progress, then closes their connections.
_SHUTDOWN_S = 1.0
_TEXT = "text/plain; charset=utf-8"
_INDEX = b'<html><body><a href="/metrics">RackWarden metrics</a></body></html>\n'


class _Threads(Generic[T]):
    """Blocking calls in their own daemon threads, at most `limit` at a time.

    Not the loop's default executor: the switch sessions run there (asyncio.to_thread), and a
    hung collector must not take its workers from a port shutdown or restore; and, unlike an
    executor's workers, daemon threads never hold up the process's exit, as the old
    per-request threads did not. A slot is freed when its thread ends, not when its waiter
    gives up, so the bound holds however long a call hangs.
    """

    def __init__(self, limit: int, name: str):
        self._slots = asyncio.Semaphore(limit)
        self._name = name

    async def run(self, fn: Callable[[], T]) -> T:
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def succeeded(value: T) -> None:
            self._slots.release()
            if not fut.done():
                fut.set_result(value)

        def failed(error: BaseException) -> None:
            self._slots.release()
            if not fut.done():
                fut.set_exception(error)

        def work() -> None:
            done: Callable[[], None]
            try:
                value = fn()
            except BaseException as e:  # handed to the waiter, which re-raises it
                done = partial(failed, e)
            else:
                done = partial(succeeded, value)
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        try:
            threading.Thread(target=work, name=self._name, daemon=True).start()
        except BaseException:
            self._slots.release()
            raise
        return await fut


class _BasicAuth:
    """PasswordCheck on the loop: remembered credentials answer at once (a scrape every few
    seconds costs no bcrypt and skips the queue); the rest pay a bcrypt in a thread, at most
    MAX_CONCURRENT_BCRYPT at a time, so a guessing flood cannot take every core."""

    def __init__(self, check: PasswordCheck):
        self._check = check
        self._threads: _Threads[bool] = _Threads(MAX_CONCURRENT_BCRYPT, "metrics-bcrypt")

    async def authorized(self, authorization: str) -> bool:
        creds = basic_credentials(authorization)
        if creds is None:
            return False
        user, password = creds
        if self._check.remembered(user, password):
            return True
        return await self._threads.run(lambda: self._check.verify(user, password))


def address_family(host: str) -> socket.AddressFamily:
    """The socket family to bind `host` (a bare address, without IPv6 brackets) with."""
    if host == "":
        return socket.AF_INET
    try:
        v6 = ipaddress.ip_address(host.strip("[]")).version == 6
        return socket.AF_INET6 if v6 else socket.AF_INET
    except ValueError:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return infos[0][0]


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening as http.server did: one socket, of the family of `host`.

    Not aiohttp's TCPSite: asyncio's create_server marks IPv6 sockets IPV6_V6ONLY (so "::"
    would stop taking IPv4 scrapes), binds "" on every family and a host name on each of its
    addresses (with port 0, each on its own port).
    """
    sock = socket.socket(address_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class MetricsServer:
    """The /metrics endpoint on the running loop; the constructor only records settings,
    start() binds."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen_addr: str = "127.0.0.1",
        port: int = 9817,
        web_config: WebConfig | None = None,
    ):
        self.registry = registry
        self.listen_addr = listen_addr
        self.requested_port = port
        self.web_config = web_config
        self.warnings: list[str] = []
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._auth: _BasicAuth | None = None
        self._scrapes: _Threads[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("metrics server not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.web_config is not None and self.web_config.tls else "http"
        bare = self.listen_addr.strip("[]")
        host = f"[{bare}]" if ":" in bare else bare
        return f"{scheme}://{host}:{self.port}/metrics"

    async def start(self) -> int:
        """Check the bind policy, load TLS, bind and serve; returns the bound port."""
        if self._server is not None:
            return self.port
        self.warnings = check_bind_policy(self.listen_addr, self.web_config)
        for w in self.warnings:
            log.warning("%s", w)
        wc = self.web_config
        tls: ssl.SSLContext | None = ssl_context(wc.tls) if wc is not None and wc.tls is not None else None
        self._auth = None
        if wc is not None and wc.requires_auth:
            # PasswordCheck hashes its throwaway password: a bcrypt, so not on the loop.
            self._auth = _BasicAuth(await asyncio.to_thread(PasswordCheck, wc.basic_auth_users))
        self._scrapes = _Threads(MAX_CONCURRENT_SCRAPES, "metrics-scrape")
        # A host name is resolved here, as http.server's bind did: in a thread.
        sock = await asyncio.to_thread(listening_socket, self.listen_addr.strip("[]"), self.requested_port)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        app.on_response_prepare.append(_server_header)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=REQUEST_TIMEOUT_S, shutdown_timeout=_SHUTDOWN_S)
        try:
            await runner.setup()
            assert runner.server is not None
            server = await asyncio.get_running_loop().create_server(
                runner.server, sock=sock, ssl=tls,
                ssl_handshake_timeout=REQUEST_TIMEOUT_S if tls is not None else None)
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._server = runner, server
        self._port = int(sock.getsockname()[1])
        log.info("metrics on %s%s", self.url, " (basic auth)" if self._auth else "")
        return self._port

    async def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, self._server = self._server, None
        runner, self._runner = self._runner, None
        self._port = None
        if server is not None:
            server.close()  # the listening socket first: no new connection from here on
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            await server.wait_closed()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        status = 500
        try:
            resp = await self._respond(request)
            status = resp.status
            return resp
        finally:
            # Debug only: every scrape would otherwise print a line in the journal.
            log.debug("%s %s %s %d", request.remote, request.method, request.raw_path, status)

    async def _respond(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return _reply(501, b"Unsupported method\n", _TEXT)
        if self._auth is not None and not await self._auth.authorized(request.headers.get("Authorization", "")):
            return _reply(401, b"Unauthorized\n", _TEXT, {"WWW-Authenticate": WWW_AUTHENTICATE})
        # The raw path, as http.server saw it: /%6Detrics is not /metrics.
        path = request.raw_path.split("?", 1)[0]
        if path == "/metrics":
            return await self._metrics(request)
        if path == "/":
            return _reply(200, _INDEX, "text/html; charset=utf-8")
        return _reply(404, b"Not found: the metrics are at /metrics\n", _TEXT)

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self._scrapes is not None
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        compress = gzip_accepted(request.headers.get("Accept-Encoding", ""))
        registry = self.registry

        def exposition() -> bytes:
            out = encoder(registry)
            return gzip.compress(out) if compress else out

        try:
            out = await self._scrapes.run(exposition)
        except Exception:
            log.exception("collecting the metrics failed")
            return _reply(500, b"Collecting the metrics failed; see the agent's log\n", _TEXT)
        return _reply(200, out, content_type, {"Content-Encoding": "gzip"} if compress else None)


def _reply(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> web.Response:
    # HEAD gets the same headers, Content-Length included, and no body (aiohttp drops it).
    return web.Response(status=status, body=body, headers={"Content-Type": content_type, **(extra or {})})


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would name itself and its version to every client.
    response.headers["Server"] = "rackwarden"


class ThreadedMetricsServer:
    """MetricsServer with the old synchronous start()/stop(), on a private event loop in a
    daemon thread: for callers without a loop of their own (tests, scripts). The daemon
    awaits MetricsServer on its own loop instead. webauth.MetricsServer names this class."""

    _TIMEOUT_S = 30.0

    def __init__(
        self,
        registry: CollectorRegistry,
        listen_addr: str = "127.0.0.1",
        port: int = 9817,
        web_config: WebConfig | None = None,
    ):
        self.server = MetricsServer(registry, listen_addr, port, web_config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def warnings(self) -> list[str]:
        return self.server.warnings

    def start(self) -> int:
        """Check the bind policy, load TLS, bind and serve in a thread; returns the bound port."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="metrics-http", daemon=True)
            self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(self._TIMEOUT_S)
        except BaseException:
            self._close_loop()
            raise

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(self._TIMEOUT_S)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        loop, self._loop = self._loop, None
        thread, self._thread = self._thread, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if thread is None or not thread.is_alive():
            loop.close()
