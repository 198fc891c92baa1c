"""The client host of tests/deploy/test_netns.py, run inside its own network namespace.

``python -m tests.deploy.netns_client MASTER W1 W2`` (http:// base URLs, each
on another namespace) checks, across those "hosts":

* registration: the master lists w1 and w2 with the addresses they advertise;
* chat: a session opened through the master lives on one worker; a handshake
  at the other worker is answered ``307`` with the owner's address, and an SDK
  member starting there follows it; both members hear each other;
* notify across workers: a consumer on w2 notifies an app on w1, and so does
  ``POST /v1/notify`` on the master;
* presence: the master lists the app on w1 while it is connected, and offline
  once it left.

Prints one JSON line of what it saw and exits 0, or fails with an
AssertionError. Every wait is bounded.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

import mc

TIMEOUT = 10.0


async def eventually(probe: Any, what: str, timeout: float = TIMEOUT) -> Any:
    """``await probe()`` until it returns something truthy (bounded)."""
    last = None
    with trio.move_on_after(timeout):
        while True:
            try:
                last = await probe()
            except httpx.HTTPError as exc:
                last = exc
            else:
                if last:
                    return last
            await trio.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


def ws(base: str) -> str:
    return base.replace("http://", "ws://", 1)


async def redirect_of(url: str) -> str:
    """The ``Location`` of a handshake that must be answered with 307."""
    with trio.fail_after(TIMEOUT):
        try:
            async with open_websocket_url(url, connect_timeout=TIMEOUT, disconnect_timeout=1):
                raise AssertionError(f"{url} accepted, expected 307")
        except ConnectionRejected as exc:
            assert exc.status_code == 307, f"{url}: {exc.status_code} {exc.body!r}"
            return {k.decode().lower(): v.decode() for k, v in exc.headers}["location"]


async def heard(chat: mc.Chat, data: str) -> None:
    with trio.fail_after(TIMEOUT):
        while True:
            event = await chat.receive()
            if isinstance(event, mc.ChatMessage) and event.data == data:
                return


async def main(master: str, w1: str, w2: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=5) as http:

        async def registered() -> dict[str, str] | None:
            body = (await http.get(f"{master}/v1/workers")).json()
            urls = {w["id"]: w["url"] for w in body["workers"]}
            return urls if set(urls) == {"w1", "w2"} else None

        seen["workers"] = await eventually(registered, "registration of w1 and w2")
        assert seen["workers"] == {"w1": ws(w1), "w2": ws(w2)}, seen["workers"]

        # chat: the owner is one worker; the other one redirects there
        async with mc.open_chat(master, "room", client="alice") as alice:
            owner = alice.worker
            other = w2 if owner == "w1" else w1
            query = "client=bob&device=laptop"
            location = await redirect_of(f"{ws(other)}/v1/chat/room?{query}")
            assert location == f"{seen['workers'][owner]}/v1/chat/room?{query}", location
            async with mc.open_chat(other, "room", client="bob", device="laptop") as bob:
                assert bob.worker == owner and set(bob.members) == {"alice", "bob"}
                await alice.send("hello bob")
                await heard(bob, "hello bob")
                await bob.send("hello alice")
                await heard(alice, "hello alice")
            seen["chat"] = {"owner": owner, "redirect": location}

        # notify across workers, and presence
        async with mc.connect_app(w1, client="carol", device="phone") as carol:
            assert carol.worker == "w1"

            async def online() -> Any:
                body = (await http.get(f"{master}/v1/clients/carol")).json()
                return body if body["connections"] == [{"worker": "w1", "device": "phone"}] else None

            seen["presence"] = await eventually(online, "carol's presence on w1")
            url = f"{ws(w2)}/v1/consumer?name=ops"
            async with open_websocket_url(url, connect_timeout=TIMEOUT) as consumer:
                with trio.fail_after(TIMEOUT):
                    welcome = orjson.loads(await consumer.get_message())
                    assert welcome["type"] == "welcome" and welcome["worker"] == "w2", welcome
                    await consumer.send_message(orjson.dumps({
                        "type": "notify", "to": {"client": "carol"}, "data": "from w2", "id": "n1",
                    }).decode())
                    ack = orjson.loads(await consumer.get_message())
                    note = await carol.receive()
            assert ack == {"type": "ack", "id": "n1", "delivered": 1}, ack
            assert (note.data, note.sender) == ("from w2", "ops"), note
            answer = await http.post(f"{master}/v1/notify",
                                     json={"to": {"client": "carol"}, "data": "from the master"})
            assert answer.status_code == 200 and answer.json()["delivered"] == 1, answer.text
            with trio.fail_after(TIMEOUT):
                note = await carol.receive()
            assert (note.data, note.sender) == ("from the master", "api"), note
            seen["notify"] = {"consumer_on_w2": ack["delivered"], "api": answer.json()["delivered"]}

        async def offline() -> Any:
            body = (await http.get(f"{master}/v1/clients/carol")).json()
            return body if not body["online"] and not body["connections"] else None

        seen["offline"] = await eventually(offline, "carol offline")
    return seen


if __name__ == "__main__":
    print(json.dumps(trio.run(main, *sys.argv[1:4])), flush=True)
