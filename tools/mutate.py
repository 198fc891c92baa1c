#!/usr/bin/env python3
"""Mutation check: does the test suite notice small, meaningful code changes?

Each mutation below is one deliberate bug: an exact snippet of the source
(it must occur exactly once in its file), what it becomes, the tests that
ought to notice, and what the change means. For each, the tool copies the
working tree to a temporary directory once, writes the mutated file there,
runs the listed tests (``pytest -x -q -p no:cacheprovider``, with a timeout)
against the copy and restores the file. The working tree itself is never
modified, so a crash or Ctrl-C cannot leave a bug behind.

A mutant is *killed* when the tests fail (or time out), *survived* when they
pass. A snippet that no longer occurs exactly once (the code moved on) is
*stale*: it is reported and left out of the kill rate, and the mutation
should be re-pointed at the new code.

Usage (stdlib only; run with the project's interpreter)::

    .venv/bin/python tools/mutate.py            # every mutation, then the table
    .venv/bin/python tools/mutate.py --list     # the mutations, numbered
    .venv/bin/python tools/mutate.py --only 3 --only 7
    .venv/bin/python tools/mutate.py --baseline # first check the tests pass unmutated

Always exits 0: it reports, it does not gate. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".hypothesis",
    "*.egg-info", "results",
)


@dataclass(frozen=True)
class Mutation:
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    description: str


def m(file: str, original: str, replacement: str, tests: str | tuple[str, ...], description: str) -> Mutation:
    return Mutation(file, original, replacement, (tests,) if isinstance(tests, str) else tests, description)


IT = "tests/integration/"
UNIT = "tests/unit/"
W = "mc/worker/"
REG = "mc/master/registry.py"
WSF = "mc/websocket/frames.py"

MUTATIONS: list[Mutation] = [
    # ---- the mutations of issue 8, re-pointed at the WorkerCore and its shell
    m(W + "flusher.py", "if conn.queued >= self.max_frames or size > self.max_bytes:",
      "if size > self.max_bytes:", IT + "test_worker_limits.py",
      "issue 8: drop the 4096-frame outbound limit (only the 4 MiB one remains)"),
    m(W + "core.py", "ErrorCode.TOO_LARGE, f\"a connection may hold",
      "ErrorCode.BAD_REQUEST, f\"a connection may hold",
      IT + "test_worker_limits.py",
      "issue 8: the 1001st subscription answered bad_request instead of too_large"),
    m(W + "core.py",
      "connections=len(self.connections), sessions=len(self.rooms),\n"
      "            subscriptions=self.hub.subscription_count, msgs_in_rate=in_rate, msgs_out_rate=out_rate,",
      "connections=len(self.connections), sessions=0,\n"
      "            subscriptions=self.hub.subscription_count, msgs_in_rate=0.0, msgs_out_rate=0.0,",
      IT + "test_cluster_api.py",
      "issue 8: the heartbeat reports 0 sessions and 0 message rates"),
    m(W + "core.py", "        for session in reply.conflicts:\n            self.drop_session(session, now)",
      "        for session in reply.conflicts:\n            pass",
      (IT + "test_worker_control_link.py", IT + "test_cluster_partition.py"),
      "issue 8: a worker ignores the master's drop of a session after a partition (conflicts)"),
    m(W + "hub.py", "if peer.queued < best.queued:", "if peer.queued > best.queued:",
      IT + "test_worker_groups.py",
      "issue 8: group delivery picks the busiest member (integration tests only)"),
    m(WSF, "self._msg_utf8.decode(payload, bool(fin))", "self._msg_utf8.decode(payload, False)",
      IT + "test_worker_bad_input.py",
      "issue 8: an unfinished UTF-8 character at the end of a message passes (integration tests only)"),
    m("mc/protocol/codec.py", "    if not bad_key or type(obj) is not dict",
      "    if True or type(obj) is not dict",
      (UNIT + "test_codec.py", IT + "test_worker_bad_input.py"),
      "issue 8 bug: integer map keys close with 4000 again instead of bad_request"),
    # ---- more of the worker (re-pointed at the core and the shell)
    m(W + "flusher.py", "or size > self.max_bytes:", "or size > 2 * self.max_bytes:",
      IT + "test_worker_limits.py", "the byte limit of the outbound queue doubled (8 MiB)"),
    m(W + "flusher.py", "            if conn.partial:\n                del conn.out[1:]",
      "            if False:\n                del conn.out[1:]", IT + "test_worker_limits.py",
      "an overflow drops the tail of a half-sent frame (corrupts the stream)"),
    # (was: the subscription-limit error built with request_id=None; the core now falls back to the
    #  frame's id, so that became equivalent; this removes the fallback itself)
    m(W + "core.py", 'rid = exc.request_id if exc.request_id is not None else getattr(frame, "id", None)',
      "rid = exc.request_id", (UNIT + "test_core.py", IT + "test_worker_bad_input.py"),
      "an error raised without an id (data a recipient cannot carry) loses the request's id"),
    m(W + "core.py", "subscriptions=self.hub.subscription_count, msgs_in_rate",
      "subscriptions=0, msgs_in_rate",
      IT + "test_cluster_api.py::test_stats_and_metrics", "the heartbeat reports 0 subscriptions"),
    m(W + "core.py", "            self.close(conn, CloseCode.DRAINING, reason, now)",
      "            self.close(conn, CloseCode.NORMAL, reason, now)", IT + "test_cluster_api.py::test_drain",
      "a drain closes connections with 1000 instead of 4503"),
    m(W + "core.py", "if conn.last_seen < deadline:", "if False and conn.last_seen < deadline:",
      IT + "test_worker_keepalive.py", "silent connections are never closed with 4008"),
    m(W + "core.py",
      "        if not self.linked:\n            self._ack(conn, frame.id, delivered=local)\n"
      "            return",
      "        if not self.linked:\n            return",
      IT + "test_worker_notify.py", "a notify with an id is never acked when there is no master"),
    # ---- the hub (routing)
    m(W + "hub.py", "if peer.paused or peer.state is not OPEN or (sub.key",
      "if peer.state is not OPEN or (sub.key",
      UNIT + "test_hub.py", "paused consumers still receive messages"),
    m(W + "hub.py", "(sub.key != ANY_KEY and sub.key != key)", "(False)",
      UNIT + "test_hub.py", "the subscription key filter is ignored"),
    m(W + "hub.py", "if p.state is OPEN and _selects(target, p)]", "if _selects(target, p)]",
      UNIT + "test_hub.py", "notify is routed to closing connections"),
    m(W + "hub.py", "or any(t in peer.tags for t in target.tags)",
      "or all(t in peer.tags for t in target.tags)",
      UNIT + "test_hub.py", "a notify by tags needs every tag instead of any"),
    m(W + "hub.py", "if len(peer.subs) >= self.max_subscriptions:",
      "if len(peer.subs) > self.max_subscriptions:",
      (UNIT + "test_hub.py", IT + "test_worker_limits.py::test_the_1001st_subscription_is_too_large"),
      "1001 subscriptions allowed (off by one)"),
    m(W + "hub.py", "if ident[0] == pattern and ident[1] == group]", "if ident[0] == pattern]",
      UNIT + "test_hub.py", "unsubscribe removes the pattern in every group"),
    m(W + "hub.py", "        self._rotate += 1\n", "        self._rotate += 0\n",
      (UNIT + "test_hub.py", IT + "test_worker_groups.py"), "group ties do not rotate"),
    # ---- chat rooms
    m(W + "chat.py", "return [p for p in self.peers() if p is not sender]", "return list(self.peers())",
      UNIT + "test_chat.py", "the sender receives its own chat message"),
    m(W + "chat.py", "if len(room) >= self.max_members and", "if len(room) > self.max_members and",
      UNIT + "test_chat.py", "a chat session takes one member more than its limit"),
    m(W + "chat.py", "now - r.empty_since >= self.linger", "now - r.empty_since > self.linger",
      UNIT + "test_chat.py", "a session ends only after (not at) its linger"),
    m(W + "chat.py", "new_client = not devices", "new_client = True",
      UNIT + "test_chat.py", "every new device counts as a new member (joined per device)"),
    m(W + "chat.py", "        if devices:\n            return False\n        del self._conns[peer.client]",
      "        if False:\n            return False\n        del self._conns[peer.client]",
      UNIT + "test_chat.py", "a client's other devices are dropped when one leaves"),
    # ---- the master's registry
    m(REG, "return now - member.info.last_seen <= self.lease",
      "return now - member.info.last_seen < self.lease",
      UNIT + "test_registry.py", "a worker is dead exactly at its lease boundary (should be live)"),
    m(REG, "if owner is claimer or self._alive(owner, now):", "if owner is claimer:",
      UNIT + "test_registry.py", "a claim takes a session from a live owner"),
    m(REG, "                if self._alive(owner, now):\n                    conflicts.append(name)",
      "                if False:\n                    conflicts.append(name)",
      (UNIT + "test_registry.py", IT + "test_cluster_partition.py"),
      "re-announcing takes sessions from live owners (no conflicts reported)"),
    m(REG, "        if current is None or current.worker_id != worker_id:\n            return False\n"
           "        del self._sessions[session]",
      "        if current is None:\n            return False\n        del self._sessions[session]",
      UNIT + "test_registry.py", "any worker can release another's session"),
    m(REG, "kicks.append(Kick(previous, client, device))", "pass",
      UNIT + "test_registry.py", "a (client, device) that moved is not kicked on its old worker"),
    m(REG, "if member is None or not self._alive(member, now):\n            return False\n"
           "        member.info = attrs.evolve(member.info, metrics=metrics",
      "if member is None:\n            return False\n"
      "        member.info = attrs.evolve(member.info, metrics=metrics",
      UNIT + "test_registry.py", "a lapsed worker's heartbeat renews its lease"),
    m(REG, "url=url, capacity=capacity, state=UP, last_seen=now)",
      "url=url, capacity=capacity, last_seen=now)",
      UNIT + "test_registry.py", "re-registering does not cancel a drain"),
    m(REG, "draining=sum(w.state != UP for w in live),", "draining=0,",
      UNIT + "test_registry.py", "the totals count no draining worker"),
    m(REG, "member.info = attrs.evolve(member.info, state=state)\n            self._version += 1",
      "member.info = attrs.evolve(member.info, state=state)",
      UNIT + "test_registry.py", "a drain does not move the membership version (long polls miss it)"),
    m(REG, "        for name in member.sessions - sessions.keys():\n            del self._sessions[name]",
      "        for name in ():\n            del self._sessions[name]",
      UNIT + "test_registry.py", "re-announcing keeps sessions the worker no longer lists"),
    m(REG, "        if notify_id in ids:\n            return True",
      "        if notify_id in ids:\n            return False",
      UNIT + "test_registry.py", "duplicate notify ids are not caught"),
    # ---- the WebSocket codec
    m(WSF, "if b1 & 0x80 != mask_bit:", "if False:",
      UNIT + "test_ws_frames.py", "unmasked client frames are accepted"),
    m(WSF,
      'if ln < 126:\n                    raise self._fail(_PROTOCOL_ERROR, "non-minimal length", events)',
      'if False:\n                    raise self._fail(_PROTOCOL_ERROR, "non-minimal length", events)',
      UNIT + "test_ws_frames.py", "non-minimal 16-bit lengths are accepted"),
    m(WSF, "self._msg_size + ln > self._max:", "self._msg_size + ln >= self._max:",
      UNIT + "test_ws_frames.py", "a message of exactly max_message bytes is refused (1009)"),
    m(WSF, "                if ln > 125:", "                if ln > 127:",
      UNIT + "test_ws_frames.py", "control frames longer than 125 bytes are accepted"),
    m(WSF, "3000 <= code <= 4999", "3000 <= code <= 5999",
      UNIT + "test_ws_frames.py", "close codes 5000-5999 are accepted"),
    m(WSF, "if op == OP_TEXT and not payload.isascii():", "if op == OP_BINARY and not payload.isascii():",
      UNIT + "test_ws_frames.py", "single-frame text messages are not checked for UTF-8"),
    m(WSF, "if b0 & 0x70:", "if b0 & 0x30:",
      UNIT + "test_ws_frames.py", "the RSV1 bit is not checked"),
    m(WSF, 'raw = reason.encode("utf-8")[:123]', 'raw = reason.encode("utf-8")[:125]',
      UNIT + "test_ws_frames.py", "a close reason may make the close frame 127 bytes"),
    m("mc/websocket/handshake.py", 'headers.get("sec-websocket-version") != "13"',
      'headers.get("sec-websocket-version") not in ("13", "8")',
      (UNIT + "test_ws_handshake.py", UNIT + "test_core.py"), "WebSocket version 8 is accepted"),
    m("mc/websocket/handshake.py", '_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"',
      '_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B12"',
      UNIT + "test_ws_handshake.py", "a wrong Sec-WebSocket-Accept"),
    # ---- the protocol layer
    m("mc/protocol/frames.py", "if type(rid) is str and 1 <= len(rid) <= MAX_ID:",
      "if type(rid) is str and len(rid) <= MAX_ID:", UNIT + "test_codec.py", "an empty id is accepted"),
    m("mc/protocol/frames.py", 'raise violation(f"frame type {kind!r} is not allowed on this endpoint")',
      'raise _bad(f"frame type {kind!r} is not allowed on this endpoint", rid)',
      UNIT + "test_codec.py", "another endpoint's frame is bad_request instead of a 4000 close"),
    m("mc/protocol/frames.py", "                or not 1 <= len(tags) <= MAX_TAGS",
      "                or not 0 <= len(tags) <= MAX_TAGS", UNIT + "test_codec.py",
      "an empty to.tags list is accepted"),
    m("mc/protocol/frames.py", '    if "data" not in obj:\n', "    if False:\n",
      UNIT + "test_codec.py", "data is no longer required"),
    m("mc/protocol/names.py", r'_NAME = re.compile(r"[A-Za-z0-9._\-:@]{1,128}")',
      r'_NAME = re.compile(r"[A-Za-z0-9._\-:@]{1,129}")',
      (UNIT + "test_codec.py", UNIT + "test_identity.py"), "names of 129 characters are accepted"),
    m("mc/protocol/topics.py", "            return len(seg) > i", "            return len(seg) >= i",
      UNIT + "test_topics.py", "'>' matches zero segments in the reference matcher"),
    m("mc/protocol/topics.py", "            if i == n:\n                out.extend(node.here)",
      "            if i == n:\n                out.extend(node.here + node.rest)",
      UNIT + "test_topics.py", "'>' matches zero segments in the index"),
    m("mc/protocol/codec.py", "if any(head in data for head in _TIMESTAMP_HEADS) and _has_timestamp(obj):",
      "if False:", UNIT + "test_codec.py", "msgpack timestamps are let through"),
    m("mc/protocol/codec.py", 'return base64.b64encode(value).decode("ascii")', 'return value.hex()',
      (UNIT + "test_codec.py", IT + "test_worker_delivery.py"), "bytes reach JSON connections as hex"),
    m("mc/protocol/identity.py", "if len(tags) > MAX_TAGS or", "if len(tags) > MAX_TAGS + 1 or",
      UNIT + "test_identity.py", "33 tags are accepted in the handshake"),
    # ---- subtler ones
    m(REG,
      "            owner.sessions.discard(session)\n"
      "        self._sessions[session] = SessionInfo(session, worker_id, 0)",
      "            pass\n        self._sessions[session] = SessionInfo(session, worker_id, 0)",
      UNIT + "test_registry.py",
      "a reclaimed session stays listed under its lapsed owner (its purge drops it)"),
    m(REG, "if member is not None and not self._alive(member, now):\n            self._purge(worker_id)",
      "if member is not None and not self._alive(member, now):\n            pass",
      UNIT + "test_registry.py", "a lapsed worker registering again keeps its stale sessions and presence"),
    m(REG, "            if entry in member.presence:\n", "            if True:\n",
      UNIT + "test_registry.py", "a worker may remove presence it does not hold"),
    m(REG, "        if len(ids) >= self.dedup_max:", "        if len(ids) > self.dedup_max:",
      UNIT + "test_registry.py", "the notify-id memory holds one id more than dedup_max"),
    m(W + "hub.py", "            self.detach(old)\n", "            pass\n",
      UNIT + "test_hub.py", "a replaced app connection stays attached (tags, counts)"),
    m(W + "hub.py",
      "                self._index.remove(pattern, sub)  # type: ignore[arg-type]\n"
      "            peer.subs = NO_SUBS",
      "                pass\n            peer.subs = NO_SUBS",
      UNIT + "test_hub.py", "a detached consumer's subscriptions stay in the index"),
    m(W + "chat.py", "and not room.holds(peer.client, peer.device):", ":",
      UNIT + "test_chat.py", "a connection replacing itself in a full session is refused"),
    m("mc/protocol/topics.py", "        self._size += 1\n        self._cache.clear()",
      "        self._size += 1",
      UNIT + "test_topics.py", "the match cache is not cleared when a subscription is added"),
    m(WSF, "            if self._pending_len < self._need:",
      "            if self._pending_len <= self._need:",
      UNIT + "test_ws_frames.py", "a frame completed exactly by the last chunk waits for more bytes"),
    m(WSF, "if ln < 0x10000 or ln >> 63:", "if ln < 0x10000:",
      UNIT + "test_ws_frames.py", "64-bit lengths with the top bit set are accepted"),
    m("mc/protocol/frames.py", '    elif key != "*" and not is_name(key):', "    elif not is_name(key):",
      UNIT + "test_codec.py", "subscribe refuses the '*' key"),
    m("mc/protocol/frames.py", "        if device is not None and not is_name(device):\n",
      "        if False:\n", UNIT + "test_codec.py", "to.device is not validated"),
    m("mc/protocol/codec.py", "orjson.dumps(obj, default=_bytes_as_base64)", "orjson.dumps(obj, default=str)",
      UNIT + "test_codec.py",
      "JSON turns bytes and other objects into their repr instead of base64 or an error"),
    m(W + "core.py", "self._write(conn, encode_frame(OP_PONG, payload))",
      'self._write(conn, encode_frame(OP_PONG, b""))',
      IT + "test_worker_keepalive.py", "a WebSocket pong does not echo the ping's payload"),
    m(W + "core.py", "self._fan_out(Left(conn.client).to_wire(), room.peers())",
      "self._fan_out(Left(conn.client).to_wire(), ())",
      IT + "test_worker_chat.py", "no left frame when a member goes"),
    m(W + "core.py", "        added = tuple(sorted(current - self._announced))\n", "        added = ()\n",
      (IT + "test_cluster_liveness.py::test_master_restart_under_connection_churn",
       IT + "test_worker_control_link.py"),
      "apps that connect while the registration is in flight are never announced"),
    m(W + "core.py", "        removed = tuple(sorted(self._announced - current))\n", "        removed = ()\n",
      IT + "test_worker_control_link.py",
      "apps that leave while the registration is in flight stay present on the master"),
    # ---- WorkerCore: connection states (mc/worker/states.py)
    m(W + "states.py", "    (CLOSING, Event.CLOSE_RECEIVED): CLOSED,",
      "    (CLOSING, Event.CLOSE_RECEIVED): CLOSING,",
      UNIT + "test_core.py", "the client's close reply does not end a closing connection"),
    m(W + "states.py", "    (OPEN, Event.SEND_CLOSE): CLOSING,", "    (OPEN, Event.SEND_CLOSE): CLOSED,",
      UNIT + "test_core.py", "our close ends the connection at once (no wait for the client's reply)"),
    m(W + "states.py", "    (CLOSED, Event.LOST): CLOSED,\n", "",
      UNIT + "test_core.py", "the socket of a closed connection going away raises StateError"),
    m(W + "states.py", "    (HANDSHAKING, Event.LOST): CLOSED,\n",
      "    (HANDSHAKING, Event.LOST): CLOSED,\n    (OPEN, Event.ACCEPT): OPEN,\n",
      UNIT + "test_core.py", "accepting an open connection again is allowed (a bug goes unnoticed)"),
    # ---- WorkerCore: closes and their timeouts
    m(W + "core.py", "conn.close_at = now + self.config.close_timeout",
      "conn.close_at = now + 2 * self.config.close_timeout",
      UNIT + "test_core.py", "the close handshake waits twice close_timeout for the reply"),
    m(W + "core.py", "if conn.state is CLOSING and conn.close_at <= now:",
      "if conn.state is CLOSING and conn.close_at < now:",
      UNIT + "test_core.py", "a close times out only after (not at) close_timeout"),
    m(W + "core.py", "code if code >= 3000 or code in (1000, 1001) else 1000", "code",
      UNIT + "test_core.py", "a client's reserved close code (1003) is echoed back"),
    m(W + "core.py", "        if conn.state is OPEN:\n            self.stats.overflows += 1",
      "        if True:\n            self.stats.overflows += 1",
      UNIT + "test_core.py", "a second overflow of a closing connection is counted again"),
    # ---- WorkerCore: presence before welcome
    m(W + "core.py", "            self._welcomes[cid] = (conn, now + self.config.presence_wait)",
      "            self._welcome_app(conn, local=False)",
      UNIT + "test_core.py", "an app's welcome goes out before the master recorded it"),
    m(W + "core.py", "            del welcomes[cid]\n            self._welcome_app(conn, local=True)",
      "            del welcomes[cid]\n            self._welcome_app(conn, local=False)",
      UNIT + "test_core.py", "the fallback welcome after presence_wait does not say presence local"),
    m(W + "core.py", "            if until > now:\n                break\n            del welcomes[cid]",
      "            if True:\n                break\n            del welcomes[cid]",
      UNIT + "test_core.py",
      "an app the master never records waits for its welcome forever (no 1 s fallback)"),
    m(W + "core.py",
      "        for conn, _ in welcomes.values():\n            self._welcome_app(conn, local=True)",
      "        for conn, _ in welcomes.values():\n            pass",
      UNIT + "test_core.py", "apps waiting for the master get no welcome when the link drops"),
    # ---- WorkerCore: drain and rebalance pacing
    m(W + "core.py", '"session moved", now, first=True)', '"session moved", now, first=False)',
      UNIT + "test_core.py", "a drain closes chat members after the apps instead of first"),
    m(W + "core.py", "        if members and self.linked and self.sink.send_control(",
      "        if False and self.linked and self.sink.send_control(",
      UNIT + "test_core.py", "a drain closes chat members without handing their sessions over first"),
    m(W + "pacing.py", "budget = max(1, int(self.rate * min(1.0, now - self._last)))",
      "budget = len(self._queue)",
      UNIT + "test_core.py", "a drain closes every connection at once, ignoring drain_rate"),
    m(W + "pacing.py", "            if conn.state is OPEN:  # closed meanwhile: costs no budget",
      "            if True:",
      UNIT + "test_core.py", "connections closed meanwhile use up the drain's budget (and are closed twice)"),
    m(W + "core.py", "if c.kind == APP and c.state is OPEN),", "if c.state is OPEN),",
      UNIT + "test_core.py", "a rebalance sheds chat members (and consumers) too"),
    m(W + "core.py", "key=lambda c: c.last_seen)[:count]", "key=lambda c: -c.last_seen)[:count]",
      UNIT + "test_core.py", "a rebalance sheds the most recently active apps first"),
    # ---- WorkerCore: security and limits
    m(W + "core.py", "elif conn.auth is not None and conn.auth.exp <= wall:", "elif False:",
      (UNIT + "test_core.py", IT + "test_worker_security.py"),
      "an expired token never closes the connection (4001)"),
    m(W + "core.py", "            conn.auth = claims\n        self._ack(conn, frame.id)",
      "            pass\n        self._ack(conn, frame.id)",
      UNIT + "test_core.py", "a refresh is acked but the old expiry stays in force"),
    m(W + "core.py", "            if claims.sub != conn.client:", "            if False:",
      UNIT + "test_core.py", "a refresh may switch to another client's token"),
    m(W + "core.py", "if conn.auth is not None and not conn.auth.may_publish(frame.topic):", "if False:",
      (UNIT + "test_core.py", IT + "test_worker_security.py"), "the token's publish claim is not enforced"),
    m("mc/identify.py", "            if not key_matches(consumer.token, api_keys):", "            if False:",
      (UNIT + "test_core.py", IT + "test_worker_security.py"), "any consumer API key (or none) is accepted"),
    m("mc/identify.py", "tags = app.tags if claims is None or claims.tags is None else claims.tags",
      "tags = app.tags",
      UNIT + "test_core.py", "the token's tags claim does not override the query's tags"),
    m(W + "core.py",
      "if c.key is not None and (not config.api_keys or not key_matches(c.key, config.api_keys))]",
      "if False]", IT + "test_reload.py", "a reload that removes an API key leaves its consumers connected"),
    # (the first version doubled the initial tokens: equivalent, take() caps them at once)
    m(W + "limits.py", "self.tokens = min(rate * BURST, self.tokens",
      "self.tokens = min(rate * BURST * 2, self.tokens",
      UNIT + "test_core.py", "a bucket idle long enough fills to four times the rate, not two (the burst)"),
    m(W + "limits.py", "        if self.tokens >= 1.0:", "        if self.tokens > 1.0:",
      UNIT + "test_core.py", "a bucket refilled to exactly one token still refuses"),
    m(W + "core.py", "self._handshakes.allow(remote, now)", 'self._handshakes.allow("", now)',
      UNIT + "test_core.py", "one handshake_rate bucket for every address instead of one per address"),
    m(W + "core.py",
      "        if self._notify_rate:\n            self._limit(conn, self._notify_rate, frame.id, now)",
      "        if False:\n            self._limit(conn, self._notify_rate, frame.id, now)",
      UNIT + "test_core.py", "notify_rate is not enforced"),
    m(W + "core.py", "if len(self.connections) >= self.config.max_connections:",
      "if len(self.connections) > self.config.max_connections:",
      UNIT + "test_core.py", "a worker takes one connection more than max_connections"),
    # ---- WorkerCore: handshake answers and frame limits
    m(W + "core.py",
      "            return refuse(req.refusal.status, ErrorCode.BAD_REQUEST, req.refusal.reason,",
      "            return refuse(400, ErrorCode.BAD_REQUEST, req.refusal.reason,",
      UNIT + "test_core.py", "a non-upgrade or version-8 request is answered 400 instead of 426"),
    m("mc/websocket/handshake.py", '    elif not _valid_key(headers.get("sec-websocket-key", "")):',
      "    elif False:",
      UNIT + "test_core.py", "a missing or short Sec-WebSocket-Key is accepted (no 400)"),
    m(W + "core.py", "subprotocol = codec.name if req.subprotocols else None", "subprotocol = codec.name",
      UNIT + "test_core.py",
      "a client that offered no subprotocol is answered with one (RFC 6455 4.1 fails it)"),
    m(WSF, "        if len(parts) >= self._max_fragments:", "        if len(parts) > self._max_fragments:",
      (UNIT + "test_core.py", IT + "test_worker_limits.py"),
      "a message may have one fragment more than max_fragments"),
    m(W + "core.py", "max_fragments=cfg.max_fragments, now=now", "max_fragments=1 << 30, now=now",
      UNIT + "test_core.py", "the worker does not pass max_fragments to its connections' parsers"),
]


# --------------------------------------------------------------------------
# running


@dataclass
class Outcome:
    result: str  # killed | survived | stale | error
    seconds: float
    detail: str = ""


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """Run ``tests`` in ``copy`` (its ``mc`` imported, in every child too); (rc or None on timeout, tail)."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "--hypothesis-profile=mutate", *tests]
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own child's group: pytest and the mc processes it started
        proc.communicate()
        return None, "timeout"
    lines = out.decode(errors="replace").strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def check_copy(copy: Path) -> None:
    """The tests in the copy must import the copy's mc, not the installed one."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([sys.executable, "-c", "import mc; print(mc.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"mutate: the copy imports mc from {where}, not from {copy}")


def mutate_one(copy: Path, mut: Mutation, timeout: float) -> Outcome:
    path = copy / mut.file
    if not path.exists():
        return Outcome("stale", 0.0, "file not found")
    source = path.read_text()
    count = source.count(mut.original)
    if count != 1:
        return Outcome("stale", 0.0, f"snippet found {count} times")
    started = time.monotonic()
    try:
        path.write_text(source.replace(mut.original, mut.replacement))
        rc, tail = run_tests(copy, mut.tests, timeout)
    finally:
        path.write_text(source)
    seconds = time.monotonic() - started
    if rc is None:
        return Outcome("killed", seconds, "timeout")
    if rc == 0:
        return Outcome("survived", seconds, tail)
    if rc == 5:  # no tests collected: the test paths are wrong, not the code
        return Outcome("error", seconds, "no tests collected")
    return Outcome("killed", seconds, tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", type=int, action="append", metavar="N", help="run mutation N (repeatable)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutation (default 300)")
    parser.add_argument("--baseline", action="store_true", help="first run every listed test unmutated")
    args = parser.parse_args()

    chosen = [(i, mut) for i, mut in enumerate(MUTATIONS, 1) if not args.only or i in args.only]
    if args.list:
        for i, mut in chosen:
            path = ROOT / mut.file
            found = path.read_text().count(mut.original) if path.exists() else 0
            stale = "" if found == 1 else f"  [STALE: snippet found {found} times]"
            print(f"{i:3}  {mut.file:28}  {mut.description}{stale}\n     tests: {' '.join(mut.tests)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="mc-mutate-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        check_copy(copy)
        if args.baseline:
            tests = tuple(dict.fromkeys(t for _, mut in chosen for t in mut.tests))
            rc, tail = run_tests(copy, tests, args.timeout * 4)
            if rc != 0:
                print(f"mutate: the tests fail without any mutation ({tail}); fix them first")
                return 0
            print(f"baseline: {tail}")
        outcomes: list[tuple[int, Mutation, Outcome]] = []
        for i, mut in chosen:
            outcome = mutate_one(copy, mut, args.timeout)
            outcomes.append((i, mut, outcome))
            print(f"{i:3}  {outcome.result:8}  {outcome.seconds:6.1f}s  {mut.file:28}  {mut.description}",
                  flush=True)

    print()
    print(f"{'#':>3}  {'result':8}  {'time':>7}  {'file':28}  description / detail")
    for i, mut, o in outcomes:
        print(f"{i:3}  {o.result:8}  {o.seconds:6.1f}s  {mut.file:28}  {mut.description}")
        if o.result != "killed":
            print(f"{'':3}  {'':8}  {'':7}  {'':28}  -> {o.detail}")
    counted = [o for _, _, o in outcomes if o.result in ("killed", "survived")]
    killed = sum(o.result == "killed" for o in counted)
    others = len(outcomes) - len(counted)
    rate = 100.0 * killed / len(counted) if counted else 0.0
    print(f"\nkill rate: {killed}/{len(counted)} = {rate:.1f}%"
          + (f"  ({others} stale or misconfigured, not counted)" if others else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
