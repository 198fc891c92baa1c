"""``mc notify``: send a notification to apps, through the master's HTTP API.

A one-shot command uses ``POST /v1/notify`` rather than a consumer
connection: the master routes it to every worker holding a matching app
(apps see it ``from: "api"``), and nothing has to connect to every worker
for a single message.
"""

from __future__ import annotations

import argparse
import functools
import sys

import httpx

from mc.client.console import add_api_key, add_master, api_key, bearer, emit, parse_data, run, say
from mc.client.errors import McError
from mc.client.urls import http_urls


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notify", help="notify apps (no target = broadcast)",
        description="Deliver DATA (JSON if it parses, else a string) to the apps selected by "
                    "--client/--device/--tags (combined with AND; none = every app) and print "
                    "{\"delivered\": N}. Sent through the master's POST /v1/notify: apps see it "
                    "from \"api\"; an offline --client prints 0.",
    )
    p.add_argument("data", metavar="DATA")
    p.add_argument("--client", metavar="C", help="only this client's connections")
    p.add_argument("--device", metavar="D", help="only this device (with --client)")
    p.add_argument("--tags", metavar="a,b", help="only apps carrying any of these tags")
    add_api_key(p)
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(notify, args), "mc notify"))


def target(args: argparse.Namespace) -> dict[str, object]:
    to: dict[str, object] = {}
    if args.client:
        to["client"] = args.client
    if args.device:
        to["device"] = args.device
    if args.tags:
        to["tags"] = [t for t in args.tags.split(",") if t]
    return to


def _error_of(resp: httpx.Response) -> object:
    try:
        return resp.json().get("error")
    except (ValueError, AttributeError):
        return None


async def notify(args: argparse.Namespace) -> int:
    headers = bearer(api_key(args))
    body = {"to": target(args), "data": parse_data(args.data)}
    masters = http_urls(args.master)
    async with httpx.AsyncClient(timeout=10.0) as http:
        for i, base in enumerate(masters):  # several masters: the next when one cannot answer
            url = f"{base}/v1/notify"
            try:
                resp = await http.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                if i + 1 == len(masters):
                    raise McError.unavailable(f"POST {url}: {exc}") from None
                continue
            if resp.status_code != 503 or i + 1 == len(masters):
                break
    if resp.status_code == 404 and _error_of(resp) == "offline":
        say(f"mc notify: {args.client} is offline", sys.stderr)
        emit({"delivered": 0})
        return 0
    if resp.status_code != 200:
        raise McError.from_status(resp.status_code, resp.content, resp.headers.items(), f"POST {url}")
    emit({"delivered": resp.json()["delivered"]})
    return 0
