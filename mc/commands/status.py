"""``mc status``: the cluster's workers as a table, from ``GET /v1/stats``."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

import httpx
import trio

from mc.client.console import add_api_key, add_master, api_key, bearer, run, say
from mc.client.errors import McError
from mc.client.urls import http_urls

COLUMNS = (
    ("ID", "id", "{}"),
    ("URL", "url", "{}"),
    ("STATE", "state", "{}"),
    ("CONNECTIONS", "connections", "{}"),
    ("SESSIONS", "sessions", "{}"),
    ("IN/S", "msgs_in_per_s", "{:.1f}"),
    ("OUT/S", "msgs_out_per_s", "{:.1f}"),
)
CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the workers and their load",
                       description="Print a table of the live workers (from GET /v1/stats).")
    p.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    add_api_key(p)
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(status, args), "mc status"))


def _cell(fmt: str, value: Any) -> str:
    try:
        return fmt.format(value if value is not None else "-")
    except (ValueError, TypeError):
        return str(value)


def table(stats: dict[str, Any]) -> str:
    """The workers as aligned columns, then a totals line."""
    rows = [[title for title, _, _ in COLUMNS]]
    for w in sorted(stats.get("workers", []), key=lambda w: str(w.get("id"))):
        rows.append([_cell(fmt, w.get(field)) for _, field, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    t = stats.get("totals", {})
    lines.append(
        f"{t.get('workers', len(rows) - 1)} worker(s), {t.get('connections', 0)} connections, "
        f"{t.get('sessions', 0)} sessions, in {_cell('{:.1f}', t.get('msgs_in_per_s', 0))}/s, "
        f"out {_cell('{:.1f}', t.get('msgs_out_per_s', 0))}/s"
    )
    return "\n".join(lines)


async def fetch(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        resp = await http.get(url)
    except httpx.HTTPError as exc:
        raise McError.unavailable(f"GET {url}: {exc}") from None
    if resp.status_code != 200:
        raise McError.from_status(resp.status_code, resp.content, resp.headers.items(), f"GET {url}")
    return resp.json()


async def status(args: argparse.Namespace) -> int:
    url = f"{http_urls(args.master)[0]}/v1/stats"
    clear = args.watch and sys.stdout.isatty()
    async with httpx.AsyncClient(timeout=5.0, headers=bearer(api_key(args))) as http:
        while True:
            text = table(await fetch(http, url))
            say(CLEAR + text if clear else text)
            if not args.watch:
                return 0
            await trio.sleep(1.0)
            if not clear:
                say("")
