"""Consumer ``notify`` -> app ``notify`` on one real worker, for every ``to`` form."""

from __future__ import annotations

import base64
import re
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from .wsclient import JSON, MSGPACK, PROTOCOLS, connect, unique

pytestmark = pytest.mark.timeout(60)

MISSING = object()

#: a trace the worker made for a frame that came without one
MADE_TRACE = re.compile(r"[0-9a-z]{1,6}-[0-9a-z]+")



@asynccontextmanager
async def population(worker):
    """Four app connections (mixed codecs) with distinct identities and tags."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    apps = {
        "alice/phone": dict(client=alice, device="phone", tags="driver", proto=JSON),
        "alice/web": dict(client=alice, device="web", tags="eu", proto=MSGPACK),
        "bob": dict(client=bob, tags="driver,eu", proto=MSGPACK),
        "carol": dict(client=carol, proto=JSON),
    }
    async with AsyncExitStack() as stack:
        conns = {label: await stack.enter_async_context(connect(worker.url, "/v1/app", **kw))
                 for label, kw in apps.items()}
        yield {"alice": alice, "bob": bob, "carol": carol}, conns


ALL = {"alice/phone", "alice/web", "bob", "carol"}
# (name, to builder given the ids, the labels that must receive it)
CASES = [
    ("absent", lambda ids: MISSING, ALL),
    ("empty", lambda ids: {}, ALL),
    ("null", lambda ids: None, ALL),
    ("client", lambda ids: {"client": ids["alice"]}, {"alice/phone", "alice/web"}),
    ("client+device", lambda ids: {"client": ids["alice"], "device": "phone"}, {"alice/phone"}),
    ("client+unknown-device", lambda ids: {"client": ids["alice"], "device": "tv"}, set()),
    ("tag", lambda ids: {"tags": ["driver"]}, {"alice/phone", "bob"}),
    ("tags-any-of", lambda ids: {"tags": ["driver", "eu"]}, {"alice/phone", "alice/web", "bob"}),
    ("client+tags", lambda ids: {"client": ids["alice"], "tags": ["eu"]}, {"alice/web"}),
    ("client+tags-none", lambda ids: {"client": ids["bob"], "tags": ["nope"]}, set()),
    ("unknown-client", lambda ids: {"client": unique("nobody")}, set()),
    ("unknown-tag", lambda ids: {"tags": [unique("tag")]}, set()),
]


def payload(proto):
    if proto == MSGPACK:
        return {"kind": "ride", "blob": b"\x01\x02\xff"}
    return {"kind": "ride", "n": [1, 2, 3]}


def seen_as(data, proto):
    if proto == JSON:
        return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                for k, v in data.items()}
    return data


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(("case", "to", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_notify_targets(worker, proto, case, to, expected):
    name = unique("notifier")
    async with population(worker) as (ids, apps), \
            connect(worker.url, "/v1/consumer", proto=proto, name=name) as c:
        frame = {"type": "notify", "data": payload(proto), "id": f"n-{case}"}
        target = to(ids)
        if target is not MISSING:
            frame["to"] = target
        ack = await c.ack(frame)
        assert ack == {"type": "ack", "id": f"n-{case}", "delivered": len(expected)}
        for label, app in apps.items():
            got = await app.fence()
            if label in expected:
                assert [MADE_TRACE.fullmatch(f.pop("trace", "")) is not None for f in got] == [True], label
                assert got == [{"type": "notify", "data": seen_as(payload(proto), app.proto),
                                "from": name, "id": f"n-{case}"}], label
            else:
                assert got == [], label


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_notify_without_id_gets_a_generated_one_and_no_ack(worker, proto):
    async with population(worker) as (ids, apps), \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("n")) as c:
        await c.send({"type": "notify", "to": {"client": ids["alice"]}, "data": 1})
        await c.send({"type": "notify", "to": {"client": ids["alice"]}, "data": 2})
        assert await c.fence() == []  # no ack without an id
        phone = await apps["alice/phone"].fence()
        web = await apps["alice/web"].fence()
        assert [f["data"] for f in phone] == [1, 2] == [f["data"] for f in web]
        for f in phone + web:
            assert isinstance(f["id"], str) and f["id"]
        # one id per notification, the same at every recipient, distinct between them
        assert [f["id"] for f in phone] == [f["id"] for f in web]
        assert phone[0]["id"] != phone[1]["id"]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_notify_bad_target_is_bad_request(worker, proto):
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("n")) as c:
        bad = [
            {"to": "alice"},
            {"to": {"client": "no spaces"}},
            {"to": {"tags": "driver"}},
            {"to": {"tags": []}},
            {"to": {"tags": [f"t{i}" for i in range(33)]}},
            {"to": {"device": 5}},
            # strict `to`: a typo or a device without its client is refused, never a broadcast
            {"to": {"clinet": "alice"}},
            {"to": {"device": "phone"}},
            {"to": {"client": "alice", "tag": ["driver"]}},
        ]
        for i, extra in enumerate(bad):
            err = await c.request({"type": "notify", "data": 1, "id": f"b{i}", **extra})
            assert err["type"] == "error" and err["code"] == "bad_request", extra
            assert err["id"] == f"b{i}" and err["reason"]
        err = await c.request({"type": "notify", "to": {}, "id": "nodata"})
        assert err["type"] == "error" and err["code"] == "bad_request" and err["id"] == "nodata"
        assert (await c.ack({"type": "notify", "data": 1, "to": {"client": unique("x")}, "id": "ok"}))[
            "delivered"] == 0
