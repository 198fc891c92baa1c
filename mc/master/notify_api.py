"""``POST /v1/notify`` and ``POST /v1/notify/batch``: a lean ASGI path ahead of Starlette's router.

The notify API is the master's hot HTTP path (bulk pushes from a backend), so
it is served by one plain ASGI callable placed in front of Starlette: no
Request object, no router walk, no exception middlewares, one pre-encoded
JSON answer. It sits *inside* the origin and key middlewares (mc.master.app),
so every check of the other routes still applies: ``403`` for a foreign
origin, ``401`` without the key, ``415`` without ``application/json``; here:
``413`` for a body over ``max_body``, ``400`` with ``{"error", "reason"}``
for a bad body, ``503`` when the store is unreachable.

The single form is PROTOCOL.md's exactly. The batch form (docs/protocol.md,
"Batch notify") takes ``{"notifies": [N, ...]}``, 1 to
:data:`MAX_BATCH_NOTIFIES` of the single form's bodies, and answers
``{"results": [...]}`` in order, each what the single form would answer:
``{"delivered"}``, or ``{"status", "error", "reason"}``. Its deliveries go out
together (one wait for all workers' counts, not one per item), and in order:
items for the same app arrive in the batch's order.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import attrs
import orjson
import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from mc.protocol import ErrorCode, ProtocolError, Target
from mc.protocol.frames import MAX_ID, MAX_TRACE, Notification

from .entry import RETRY_AFTER
from .state import MasterState
from .store import StoreUnavailable

#: items of one ``POST /v1/notify/batch``, at most (more: ``413``); the body is bounded by ``max_body``
MAX_BATCH_NOTIFIES = 1000
SINGLE_PATH = "/v1/notify"
BATCH_PATH = "/v1/notify/batch"
PATHS = frozenset({SINGLE_PATH, BATCH_PATH})

_notify_ids = itertools.count(1)
_boot = f"{time.time_ns():x}"
_JSON = (b"content-type", b"application/json")


@attrs.frozen(slots=True)
class NotifyRequest:
    """One validated notify: its target and the frame the apps get."""

    target: Target
    frame: Notification
    id: str | None  # the sender's id (deduplicated), if it gave one


@attrs.frozen(slots=True)
class Answer:
    status: int
    body: dict[str, Any]


def refused(status: int, code: str, reason: str) -> Answer:
    return Answer(status, {"error": code, "reason": reason})


def parse_notify(body: Any) -> NotifyRequest:
    """A notify body (the consumer frame's fields) as a request; ProtocolError(bad_request) if invalid."""
    if type(body) is not dict:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    target = Target.parse(body.get("to"))
    if "data" not in body:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "data is required")
    nid = body.get("id")
    if nid is not None and not (type(nid) is str and 1 <= len(nid) <= MAX_ID):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"id must be a string of 1 to {MAX_ID} characters")
    trace = body.get("trace")
    if trace is not None and not (type(trace) is str and 1 <= len(trace) <= MAX_TRACE):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"trace must be a string of 1 to {MAX_TRACE} characters")
    made = f"api-{_boot}-{next(_notify_ids)}"
    return NotifyRequest(target, Notification(body["data"], "api", nid if nid is not None else made,
                                              trace or made), nid)


def parse_batch(body: Any) -> list[NotifyRequest | Answer]:
    """The items of a batch body: each a request, or the ``400`` its own body deserves.

    The envelope itself raises ProtocolError: ``bad_request``, or
    ``too_large`` past :data:`MAX_BATCH_NOTIFIES` items.
    """
    items = body.get("notifies") if type(body) is dict else None
    if type(items) is not list or not items:
        raise ProtocolError(ErrorCode.BAD_REQUEST, 'body must be {"notifies": [a notify, ...]} (1 or more)')
    if len(items) > MAX_BATCH_NOTIFIES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"at most {MAX_BATCH_NOTIFIES} notifies per batch")
    out: list[NotifyRequest | Answer] = []
    for item in items:
        try:
            out.append(parse_notify(item))
        except ProtocolError as exc:
            out.append(refused(400, exc.code, exc.reason))
    return out


async def admit(state: MasterState, req: NotifyRequest) -> tuple[Answer | None, set[str] | None]:
    """The store's checks of one notify: ``404`` offline, ``409`` duplicate; else, for a
    notify to a client, the workers holding it (looked up once: routing reuses them)."""
    store = state.store
    target = req.target
    workers = None
    if target.client is not None:
        workers = await store.workers_for(target.client, target.device)
        if not workers:
            return refused(404, "offline", f"client {target.client!r} has no matching connection"), None
    if req.id is not None and await store.seen_notify_id(req.id, now=state.store_now()):
        return refused(409, "duplicate", f"notify id {req.id!r} was used in the last 10 minutes"), None
    return None, workers


async def notify_one(state: MasterState, req: NotifyRequest) -> Answer:
    await state.purge_lapsed()
    refusal, workers = await admit(state, req)
    if refusal is not None:
        return refusal
    return Answer(200, {"delivered": await state.route_notify(req.target, req.frame, workers=workers)})


async def notify_batch(state: MasterState, items: list[NotifyRequest | Answer]) -> Answer:
    """Every item checked in order (a repeated id is a duplicate), then all delivered at once."""
    await state.purge_lapsed()
    answers: list[Answer | None] = []
    jobs: list[tuple[Target, Notification, set[str] | None]] = []
    for item in items:
        if isinstance(item, Answer):
            answers.append(item)
            continue
        refusal, workers = await admit(state, item)
        answers.append(refusal)
        if refusal is None:
            jobs.append((item.target, item.frame, workers))
    counts = iter(await state.route_notify_many(jobs))
    results = []
    for a in answers:
        if a is None:
            results.append({"delivered": next(counts)})
        else:
            results.append({"status": a.status, **a.body})
    return Answer(200, {"results": results})


class FastPath:
    """ASGI: a ``POST`` of :data:`PATHS` straight to ``notify``, anything else to ``app`` (Starlette)."""

    def __init__(self, app: ASGIApp, notify: NotifyAPI) -> None:
        self.app = app
        self.notify = notify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PATHS:
            await self.notify(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class NotifyAPI:
    """The ASGI endpoint of a notify ``POST`` (single or batch, by path).

    At most :func:`batches_in_flight` batches are delivered at once (the others
    wait their turn): a batch queues up to :data:`MAX_BATCH_NOTIFIES` control
    messages per worker at once, and a link whose queue (``link_queue``) fills up
    is dropped.
    """

    def __init__(self, state: MasterState) -> None:
        self.state = state
        self._batches = trio.Semaphore(batches_in_flight(state.config.link_queue))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        try:
            body = await read_body(scope, receive, state.config.max_body)
            if body is None:
                return  # the client went away
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "body must be JSON") from None
            if scope["path"] == SINGLE_PATH:
                answer = await notify_one(state, parse_notify(obj))
            else:
                items = parse_batch(obj)
                async with self._batches:
                    answer = await notify_batch(state, items)
        except ProtocolError as exc:
            answer = refused(413 if exc.code == ErrorCode.TOO_LARGE else 400, exc.code, exc.reason)
        except StoreUnavailable as exc:
            state.store_failed(exc)
            reason = f"the registry store is unavailable: {exc}"
            await respond(send, refused(503, ErrorCode.UNAVAILABLE, reason),
                          [(b"retry-after", RETRY_AFTER.encode())])
            return
        await respond(send, answer)


def batches_in_flight(link_queue: int) -> int:
    """Batches delivered at once: together they fill at most half a link's queue."""
    return max(1, link_queue // (2 * MAX_BATCH_NOTIFIES))


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ProtocolError(too_large) past ``limit`` bytes; None on a disconnect."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            raise ProtocolError(ErrorCode.TOO_LARGE, f"body larger than {limit} bytes")
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"body larger than {limit} bytes")
        if not message.get("more_body", False):
            return body


async def respond(send: Send, answer: Answer, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(answer.body)
    await send({"type": "http.response.start", "status": answer.status,
                "headers": [_JSON, (b"content-length", b"%d" % len(payload)), *(extra or ())]})
    await send({"type": "http.response.body", "body": payload})
