"""Bearer-token authentication and request-size limits for the API.

Submitting a study starts processes (and, through Ray, code) on the cluster, so every mutating
route needs the token; reads need it too whenever a token is set, unless ``read_auth`` is
explicitly false; the probes are always open so orchestrators can call them. Tokens are compared with :func:`secrets.compare_digest` (constant
time, no timing oracle).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
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


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """App-wide dependency: 401 unless the request carries the configured bearer token.

    A server without a token (only allowed on loopback, see ``Settings.check_exposure``) is
    the single-user development mode and lets everything through. ``async`` although it awaits
    nothing: a plain ``def`` dependency would cost every request a thread-pool hop.
    """
    expected: str | None = getattr(request.app.state, "api_token", None)
    if expected is None:
        request.state.authenticated = True  # loopback development mode: one user
        return
    request.state.authenticated = credentials is not None and token_matches(
        credentials.credentials, expected)
    if request.url.path in OPEN_PATHS:
        return
    if request.method in READ_METHODS and not request.app.state.settings.reads_need_token:
        return
    if credentials is None:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    if not request.state.authenticated:
        logger.warning("rejected a wrong token for %s %s from %s", request.method,
                       request.url.path, request.client.host if request.client else "?")
        raise AuthError("invalid bearer token")


def is_authenticated(request: Request) -> bool:
    """Whether this request proved the token (always, when none is configured). Reads that
    are open without a token (``PHITUNE_READ_AUTH=false``) hide error details from the
    others: an error naming a path tells whether a file exists."""
    return bool(getattr(request.state, "authenticated", False))


#: What a token-less reader sees instead of an error message.
HIDDEN_ERROR = "error details need the API token"


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (port and IPv6 brackets removed, lower case)."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class TrustedHostMiddleware:
    """Refuse requests whose ``Host`` is not one of ``allowed_hosts`` (400).

    Only installed without a token (loopback mode): there the API trusts whoever reaches
    it, and DNS rebinding lets a web page in the user's browser reach ``127.0.0.1`` under
    the attacker's own host name. Checking ``Host`` closes that door (as Jupyter does).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(host_of(h) for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                     if k == b"host"), "")
        if host_of(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        payload = json.dumps({"detail": "Host header not allowed: without an API token the "
                              "API answers only to " + ", ".join(sorted(self.allowed)) +
                              " (PHITUNE_ALLOWED_HOSTS)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def listening_socket(host: str, port: int, *, has_token: bool) -> socket.socket:
    """Bind the server's socket and check the address it really got.

    ``Settings.check_exposure`` looks at the configured host name; what counts is the
    address the kernel bound (a name can resolve elsewhere than its spelling suggests, e.g.
    a ``localhost`` mapped to a LAN address in ``/etc/hosts``). Without a token, anything
    but a loopback address is closed again and refused.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        bound = sock.getsockname()[0]
        if not has_token and not ipaddress.ip_address(bound.split("%", 1)[0]).is_loopback:
            raise ValueError(
                f"host={host!r} bound {bound}, which is not a loopback address, and no API "
                "token is configured; set PHITUNE_API_TOKEN (or bind to 127.0.0.1)")
        # no listen() here: asyncio listens once the app has started (lifespan done), so a
        # client that connects early is refused rather than left waiting on a backlog
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


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
