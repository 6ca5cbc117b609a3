"""The local API's token rules (R11); its routes are served by the web layer (agent/web/).

`ApiServer` is kept for callers that drive the daemon's loop from another thread; the daemon
itself runs agent/web/server.WebServer on its own loop.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from .textfile import TextFileError, read_text
from .web.compat import ApiServer

__all__ = ["TOKEN_FILE", "TOKEN_FORM", "ApiServer", "ApiTokenError", "ensure_token"]
TOKEN_FILE = "api.token"


# What secrets.token_urlsafe() writes; the CLI checks the file against the same form.
TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]{16,}")


class ApiTokenError(ValueError):
    """The token file exists but holds no usable token; str() is `file:line: reason`."""


def ensure_token(state_dir: Path) -> str:
    """The bearer token, created on first start, readable only by the agent's user."""
    path = state_dir / TOKEN_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    try:
        token = read_text(path).strip()
    except TextFileError as e:
        raise ApiTokenError(f"{e}; remove the file to have a new token made") from None
    if not TOKEN_FORM.fullmatch(token):
        # An empty or hand-edited token would make the API answer to a guessable secret.
        raise ApiTokenError(f"{path}:1: not an API token (one line of at least 16 URL-safe base64"
                            " characters); remove the file to have a new token made")
    return token
