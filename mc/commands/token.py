"""``mc token``: mint an app token (HS256 JWT) from the configured secret, for development."""

from __future__ import annotations

import argparse
import os
import sys

from mc.tokens import mint


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="mint an app token (JWT) for development")
    p.add_argument("--sub", required=True, help="the client id (the token's sub)")
    p.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default: %(default)s)")
    p.add_argument("--tags", default="", help="comma list: the token's tags claim")
    p.add_argument("--chat", default="", help="comma list of session patterns the app may open")
    p.add_argument("--publish", default="", help="comma list of topic patterns the app may publish to")
    p.add_argument("--secret", default=None, help="HS256 secret (default: $MC_JWT_SECRET)")
    p.set_defaults(run=run)


def _items(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def run(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("MC_JWT_SECRET", "")
    if not secret:
        print("mc token: no secret: pass --secret or set MC_JWT_SECRET", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("mc token: --ttl must be positive", file=sys.stderr)
        return 2
    print(mint(secret, args.sub, args.ttl, tags=_items(args.tags), chat=_items(args.chat),
               publish=_items(args.publish)))
    return 0
