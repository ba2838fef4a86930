"""Strict JSON request bodies: no ``NaN``/``Infinity``, no absurd nesting, checked before parsing.

Why: Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, RFC 8259 §6),
so they reached the specs, were stored as non-standard JSON, and a 422 that echoed them back
failed to render (a 500). A dict nested 800 deep in ``model_kwargs`` passed the parser and
broke the response, one nested 10 000 deep hit the recursion limit. This middleware looks at
every JSON body before FastAPI does and answers 422 with a message (shaped like FastAPI's own
validation errors, never echoing the input) when the body has a non-finite constant or nests
deeper than :data:`MAX_DEPTH`. The nesting depth is measured without recursion (strings
removed, then a running count of brackets), so no input can exhaust the stack.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Deepest nesting of arrays/objects a request body may have (a spec needs about 4).
MAX_DEPTH = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


class StrictJSONError(ValueError):
    """A body that is not strict JSON; the message says why without quoting the body."""


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(
        f"{name} is not a JSON number (RFC 8259 allows finite numbers only); "
        "send a finite number or null"
    )


def nesting_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text, brackets inside strings ignored."""
    stripped = _STRING.sub(b'""', body)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    steps = np.isin(arr, _OPEN).astype(np.int32) - np.isin(arr, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def check_strict_json(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`StrictJSONError` unless ``body`` is JSON without non-finite numbers that
    nests at most ``max_depth`` levels. Malformed JSON is left to FastAPI's own 422."""
    depth = nesting_depth(body)
    if depth > max_depth:
        raise StrictJSONError(
            f"the body nests {depth} levels deep; at most {max_depth} are allowed"
        )
    try:
        json.loads(body, parse_constant=_reject_constant)
    except StrictJSONError:
        raise
    except ValueError:
        return  # not JSON at all: FastAPI answers with its own json_invalid 422


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True  # FastAPI parses a body without content type as JSON too


class StrictJSONMiddleware:
    """Check JSON request bodies with :func:`check_strict_json` before the app sees them.

    Sits inside :class:`service.api.auth.BodySizeLimitMiddleware`, so the body it buffers is
    already bounded by ``max_request_bytes``.
    """

    def __init__(self, app: ASGIApp, max_depth: int = MAX_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_strict_json(body, self.max_depth)
        except StrictJSONError as exc:
            await _reject(send, str(exc))
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _reject(send: Send, message: str) -> None:
    payload = json.dumps({"detail": [{"loc": ["body"], "msg": message,
                                      "type": "json_invalid"}]}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
