"""Bearer-token authentication and request-size limits for the API.

Submitting a study starts processes (and, through Ray, code) on the cluster, so every mutating
route needs the token; reads are open unless ``read_auth`` is set; the probes are always open so
orchestrators can call them. Tokens are compared with :func:`secrets.compare_digest` (constant
time, no timing oracle).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import AuthError

logger = logging.getLogger(__name__)

#: Methods that never change state; open unless ``Settings.read_auth``.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Liveness/readiness probes: always open (they reveal nothing but "up").
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

bearer = HTTPBearer(auto_error=False, description="PHITUNE_API_TOKEN / PHITUNE_API_TOKEN_FILE")


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (bytes, so non-ASCII input cannot raise)."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """App-wide dependency: 401 unless the request carries the configured bearer token.

    A server without a token (only allowed on loopback, see ``Settings.check_exposure``) is
    the single-user development mode and lets everything through.
    """
    expected: str | None = getattr(request.app.state, "api_token", None)
    if expected is None or request.url.path in OPEN_PATHS:
        return
    if request.method in READ_METHODS and not request.app.state.settings.read_auth:
        return
    if credentials is None:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    if not token_matches(credentials.credentials, expected):
        logger.warning("rejected a wrong token for %s %s from %s", request.method,
                       request.url.path, request.client.host if request.client else "?")
        raise AuthError("invalid bearer token")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 before they are parsed.

    Checks ``Content-Length`` up front and also counts chunked bodies as they stream in, so a
    client cannot bypass the limit by omitting the header.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            # FastAPI turns any exception while reading the body into a 400, so answer 413
            # here, drop whatever the app sends afterwards, and stop the read.
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not started and not rejected:
                        rejected = True
                        await self._reject(send)
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started and not rejected:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body: dict[str, Any] = {
            "detail": f"request body exceeds {self.max_bytes} bytes (max_request_bytes)"
        }
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
