"""JSON over HTTP POST with urllib in a thread: bounded, no proxies, no redirects, never raises."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_MAX_BODY = 64 * 1024  # enough for any error text a receiver sends back
_SNIPPET = 300


@dataclass(frozen=True, slots=True)
class HttpResult:
    """One POST: ok on 2xx; `detail` says what happened (no credentials in it)."""

    ok: bool
    status: int | None
    detail: str
    body: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a body-less GET that can answer 200: a silent loss.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def check_url(url: str) -> str:
    """Refuse a URL that cannot work before anything is sent (config time, no I/O)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"URL {url!r} must be http:// or https:// with a host")
    if any(ord(c) < 0x21 for c in url):
        raise ValueError(f"URL {url!r} contains spaces or control characters")
    return url


def json_default(value: object) -> object:
    """JSON for datetimes in events (RFC 3339 with their offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _post_blocking(
    url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, cafile: str | None
) -> HttpResult:
    handlers: list[urllib.request.BaseHandler] = [
        # Environment proxies would silently reroute on-call alerts; an explicit URL is meant.
        urllib.request.ProxyHandler({}),
        _NoRedirect(),
    ]
    if url.startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            text = resp.read(_MAX_BODY).decode("utf-8", "replace")
            return HttpResult(True, resp.status, f"HTTP {resp.status}", text)
    except urllib.error.HTTPError as e:
        text = e.read(_MAX_BODY).decode("utf-8", "replace") if e.fp is not None else ""
        what = " (redirects are not followed)" if 300 <= e.code < 400 else ""
        snippet = text.strip()[:_SNIPPET]
        return HttpResult(False, e.code, f"HTTP {e.code}{what}: {snippet or e.reason}", text)
    except urllib.error.URLError as e:
        return HttpResult(False, None, _network_detail(e.reason, timeout_s))
    except TimeoutError as e:
        return HttpResult(False, None, _network_detail(e, timeout_s))
    except http.client.HTTPException as e:
        return HttpResult(False, None, f"bad HTTP response: {type(e).__name__}: {e}")
    except OSError as e:
        return HttpResult(False, None, _network_detail(e, timeout_s))


def _network_detail(reason: object, timeout_s: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason}"
    return f"network error: {reason}"


async def post_json(
    url: str,
    payload: object,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    cafile: str | None = None,
) -> HttpResult:
    """POST `payload` as UTF-8 JSON; a 2xx is ok, anything else is a result, never an exception."""
    try:
        body = json.dumps(payload, ensure_ascii=False, default=json_default).encode("utf-8")
    except (TypeError, ValueError) as e:
        return HttpResult(False, None, f"payload is not JSON: {e}")
    all_headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": "rackwarden-notify"}
    all_headers.update(headers or {})
    try:
        # The socket timeout bounds each read; wait_for bounds the whole exchange for the caller.
        return await asyncio.wait_for(
            asyncio.to_thread(_post_blocking, url, body, all_headers, timeout_s, cafile),
            timeout=timeout_s * 2 + 1,
        )
    except TimeoutError:
        return HttpResult(False, None, f"timed out after {timeout_s * 2 + 1:g} s in total")
