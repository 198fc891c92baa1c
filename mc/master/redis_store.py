"""The registry in Redis, shared by several masters (``--store redis://HOST:PORT/DB``).

Every method is one Lua script, so it is atomic across masters exactly as a
:class:`~.registry.Registry` method is atomic in one process: of two masters'
claims for a free session, the first script to run wins and the other gets
its owner. The semantics are the registry's, method for method (same state
machine test); only the representation differs.

Keys (all under one hash tag, ``{mc}``, so they live in one slot):

=====================  ===================================================
``{mc}:members``       set of worker ids (to enumerate and purge)
``{mc}:w:ID``          hash: url, cap, state, seen, reg, master, metrics;
                       key TTL ``2 x lease`` (renewed by each heartbeat)
``{mc}:ws:ID``         set: the sessions worker ID owns
``{mc}:wp:ID``         set: its presence entries, ``client\\ndevice``
``{mc}:s:SESSION``     hash: w (owner), m (members), q (handed-over seq)
``{mc}:p:CLIENT``      hash: device -> worker id
``{mc}:n:ID``          notify-id dedup: ``SET NX PX`` (10 minutes)
``{mc}:version``       the membership version (INCR)
=====================  ===================================================

Pub/sub: every version bump is published on ``{mc}:version`` (each master's
long-polls wake), and each master listens on ``{mc}:m:MASTER`` for commands
and notifies routed to the workers linked to it (mc/master/routing.py).

Leases: a worker is live while ``now - seen <= lease``, ``now`` being the wall
clock of the master that asks (masters must keep their clocks within a
fraction of the lease, as NTP does). The hash's key TTL is a second line: a
worker whose every master died disappears on its own after two leases, and
any master's expire tick purges what it owned. Soft state as ever: after a
Redis restart (everything lost) each worker's next heartbeat is answered
"register again", and its full re-announcement rebuilds the store within
one report interval.

Errors: a Redis that cannot be reached raises :class:`~.store.StoreUnavailable`
(the shell answers 503, see docs/several-masters.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import coredis
import coredis.exceptions
import msgpack
import trio
from coredis.retry import ExponentialBackoffRetryPolicy

from mc.protocol.control import Metrics

from .registry import UP, Kick, RegistryFull, SessionInfo, UnknownWorker, WorkerInfo
from .store import NOBODY, Located, Store, StoreUnavailable

__all__ = ["RedisStore", "open_redis_store"]

log = logging.getLogger("mc.master.redis")
logging.getLogger("coredis").setLevel(logging.WARNING)  # its NOSCRIPT-then-EVAL retries are routine

P = "{mc}"

#: what a Redis that cannot be reached raises (through coredis and anyio)
_DOWN: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError, OSError, TimeoutError, anyio.BrokenResourceError,
    anyio.ClosedResourceError, anyio.EndOfStream,
)
#: the pub/sub connection comes back within half a second of Redis (coredis' default waits up to 16 s)
_RESUBSCRIBE = ExponentialBackoffRetryPolicy(
    (coredis.exceptions.ConnectionError, OSError), retries=None, base_delay=0.05, max_delay=0.5, jitter=True)
_LISTEN_ERRORS: tuple[type[BaseException], ...] = (coredis.exceptions.RedisError, *_DOWN)

# Shared Lua helpers, prepended to every script. KEYS are not declared per key
# (the keys a script touches depend on the data); the hash tag keeps them in one slot.
_LIB = r"""
local P = KEYS[1]
local LEASE = tonumber(ARGV[1])
local NOW = tonumber(ARGV[2])
local function wkey(id) return P .. ':w:' .. id end
local function is_member(id) return redis.call('EXISTS', wkey(id)) == 1 end
local function alive(id)
  local seen = redis.call('HGET', wkey(id), 'seen')
  return seen ~= false and NOW - tonumber(seen) <= LEASE
end
local function bump()
  local v = redis.call('INCR', P .. ':version')
  redis.call('PUBLISH', P .. ':version', v)
  return v
end
local function split(e)
  local i = string.find(e, '\n', 1, true)
  return string.sub(e, 1, i - 1), string.sub(e, i + 1)
end
local function purge(id)
  for _, s in ipairs(redis.call('SMEMBERS', P .. ':ws:' .. id)) do
    if redis.call('HGET', P .. ':s:' .. s, 'w') == id then redis.call('DEL', P .. ':s:' .. s) end
  end
  for _, e in ipairs(redis.call('SMEMBERS', P .. ':wp:' .. id)) do
    local c, d = split(e)
    if redis.call('HGET', P .. ':p:' .. c, d) == id then redis.call('HDEL', P .. ':p:' .. c, d) end
  end
  redis.call('DEL', P .. ':ws:' .. id, P .. ':wp:' .. id, wkey(id))
  redis.call('SREM', P .. ':members', id)
  bump()
end
local function set_state(id, state)
  if redis.call('HGET', wkey(id), 'state') ~= state then
    redis.call('HSET', wkey(id), 'state', state)
    bump()
  end
end
local function claim(s, id)
  local skey = P .. ':s:' .. s
  local cur = redis.call('HGET', skey, 'w')
  if cur then
    if cur == id or alive(cur) then return cur end
    redis.call('SREM', P .. ':ws:' .. cur, s)
  end
  redis.call('DEL', skey)
  redis.call('HSET', skey, 'w', id, 'm', 0, 'q', 0)
  redis.call('SADD', P .. ':ws:' .. id, s)
  return id
end
local function delta(id, removed, added)
  local wp = P .. ':wp:' .. id
  for _, e in ipairs(removed) do
    if redis.call('SREM', wp, e) == 1 then
      local c, d = split(e)
      redis.call('HDEL', P .. ':p:' .. c, d)
    end
  end
  local kicks = {}
  for _, e in ipairs(added) do
    local c, d = split(e)
    local prev = redis.call('HGET', P .. ':p:' .. c, d)
    if prev ~= id then
      redis.call('HSET', P .. ':p:' .. c, d, id)
      redis.call('SADD', wp, e)
      if prev then
        redis.call('SREM', P .. ':wp:' .. prev, e)
        table.insert(kicks, prev)
        table.insert(kicks, e)
      end
    end
  end
  return kicks
end
"""

# ARGV: lease, now, id, url, capacity, master, ttl_ms, max_workers -> {registered_at, metrics} | error
_REGISTER = _LIB + r"""
local id, url, cap, master, ttl, max = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local k = wkey(id)
if redis.call('SISMEMBER', P .. ':members', id) == 1 and not alive(id) then purge(id) end
if not is_member(id) then
  if redis.call('SCARD', P .. ':members') >= max then return redis.error_reply('FULL') end
  redis.call('HSET', k, 'url', url, 'cap', cap, 'state', 'up', 'seen', ARGV[2], 'reg', ARGV[2],
             'master', master, 'metrics', '')
  redis.call('SADD', P .. ':members', id)
  redis.call('PEXPIRE', k, ttl)
  bump()
  return {ARGV[2], ''}
end
local old = redis.call('HMGET', k, 'url', 'cap', 'state', 'reg', 'metrics')
redis.call('HSET', k, 'url', url, 'cap', cap, 'state', 'up', 'seen', ARGV[2], 'master', master)
redis.call('PEXPIRE', k, ttl)
if old[1] ~= url or old[2] ~= cap or old[3] ~= 'up' then bump() end
return {old[4], old[5]}
"""

# ARGV: lease, now, id, metrics, ttl_ms -> 1 | 0
_HEARTBEAT = _LIB + r"""
local id = ARGV[3]
if not is_member(id) or not alive(id) then return 0 end
redis.call('HSET', wkey(id), 'seen', ARGV[2], 'metrics', ARGV[4])
redis.call('PEXPIRE', wkey(id), ARGV[5])
return 1
"""

# ARGV: lease, now -> purged ids
_EXPIRE = _LIB + r"""
local dead = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':members')) do
  if not alive(id) then table.insert(dead, id) end
end
for _, id in ipairs(dead) do purge(id) end
return dead
"""

# ARGV: lease, now, id -> 1 | 0
_REMOVE = _LIB + r"""
local id = ARGV[3]
if redis.call('SISMEMBER', P .. ':members', id) == 0 and not is_member(id) then return 0 end
purge(id)
return 1
"""

# ARGV: lease, now, id, what (draining|drained|up) -> 1 | 0
_STATE = _LIB + r"""
local id, what = ARGV[3], ARGV[4]
if not is_member(id) then return 0 end
local state = redis.call('HGET', wkey(id), 'state')
if what == 'draining' then
  if state == 'up' then set_state(id, 'draining') end
elseif what == 'drained' then
  if state == 'up' then return 0 end
  set_state(id, 'drained')
else
  set_state(id, 'up')
end
return 1
"""

_FIELDS = "'url', 'cap', 'state', 'metrics', 'reg', 'seen'"

# ARGV: lease, now, live_only (1|0) -> flat list: id + 6 fields per worker
_WORKERS = _LIB + r"""
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':members')) do
  if ARGV[3] == '0' or alive(id) then
    local f = redis.call('HMGET', wkey(id), """ + _FIELDS + r""")
    if f[1] then
      table.insert(out, id)
      for i = 1, 6 do table.insert(out, f[i]) end
    end
  end
end
return out
"""

# ARGV: lease, now, id -> 6 fields or empty
_WORKER = _LIB + r"""
if not is_member(ARGV[3]) then return {} end
return redis.call('HMGET', wkey(ARGV[3]), """ + _FIELDS + r""")
"""

# ARGV: lease, now, then pairs (session, claimer or '') -> flat (owner, url, seq) per pair; '' = nobody
_LOCATE = _LIB + r"""
local out = {}
for i = 3, #ARGV, 2 do
  local s, id = ARGV[i], ARGV[i + 1]
  local owner = false
  if id ~= '' then
    if is_member(id) and alive(id) then owner = claim(s, id) end
  else
    local cur = redis.call('HGET', P .. ':s:' .. s, 'w')
    if cur and alive(cur) then owner = cur end
  end
  if owner then
    table.insert(out, owner)
    table.insert(out, redis.call('HGET', wkey(owner), 'url') or '')
    table.insert(out, redis.call('HGET', P .. ':s:' .. s, 'q') or '0')
  else
    table.insert(out, ''); table.insert(out, ''); table.insert(out, '0')
  end
end
return out
"""

# ARGV: lease, now, session, id -> owner | error UNKNOWN
_CLAIM = _LIB + r"""
local id = ARGV[4]
if not is_member(id) or not alive(id) then return redis.error_reply('UNKNOWN') end
return claim(ARGV[3], id)
"""

# ARGV: lease, now, session -> {w, m, q} or empty
_LOOKUP = _LIB + r"""
return redis.call('HMGET', P .. ':s:' .. ARGV[3], 'w', 'm', 'q')
"""

# ARGV: lease, now, session, id -> 1 | 0
_RELEASE = _LIB + r"""
local s, id = ARGV[3], ARGV[4]
if redis.call('HGET', P .. ':s:' .. s, 'w') ~= id then return 0 end
redis.call('DEL', P .. ':s:' .. s)
redis.call('SREM', P .. ':ws:' .. id, s)
return 1
"""

# ARGV: lease, now, session, id, members -> 1 | 0
_REPORT = _LIB + r"""
local s, id = ARGV[3], ARGV[4]
if redis.call('HGET', P .. ':s:' .. s, 'w') ~= id then return 0 end
redis.call('HSET', P .. ':s:' .. s, 'm', ARGV[5])
return 1
"""

# ARGV: lease, now, session, id, seq -> 1 | 0
_MOVE = _LIB + r"""
local s, id = ARGV[3], ARGV[4]
local cur = redis.call('HGET', P .. ':s:' .. s, 'w')
if not cur or not is_member(id) then return 0 end
redis.call('SREM', P .. ':ws:' .. cur, s)
redis.call('HSET', P .. ':s:' .. s, 'w', id, 'q', ARGV[5])
redis.call('SADD', P .. ':ws:' .. id, s)
return 1
"""

# ARGV: lease, now, id, then pairs (session, members) -> conflicts | error UNKNOWN
_ANNOUNCE = _LIB + r"""
local id = ARGV[3]
if not is_member(id) or not alive(id) then return redis.error_reply('UNKNOWN') end
local wanted = {}
for i = 4, #ARGV, 2 do wanted[ARGV[i]] = true end
local ws = P .. ':ws:' .. id
for _, s in ipairs(redis.call('SMEMBERS', ws)) do
  if not wanted[s] then
    redis.call('DEL', P .. ':s:' .. s)
    redis.call('SREM', ws, s)
  end
end
local conflicts = {}
for i = 4, #ARGV, 2 do
  local s, n = ARGV[i], ARGV[i + 1]
  local skey = P .. ':s:' .. s
  local cur = redis.call('HGET', skey, 'w')
  local taken = false
  if cur and cur ~= id then
    if alive(cur) then taken = true else redis.call('SREM', P .. ':ws:' .. cur, s) end
  end
  if taken then
    table.insert(conflicts, s)
  else
    redis.call('DEL', skey)
    redis.call('HSET', skey, 'w', id, 'm', n, 'q', 0)
    redis.call('SADD', ws, s)
  end
end
return conflicts
"""

# ARGV: lease, now, id, n_removed, removed..., added... -> flat kicks (worker, entry) | error UNKNOWN
_DELTA = _LIB + r"""
local id = ARGV[3]
if not is_member(id) then return redis.error_reply('UNKNOWN') end
local n = tonumber(ARGV[4])
local removed, added = {}, {}
for i = 5, 4 + n do table.insert(removed, ARGV[i]) end
for i = 5 + n, #ARGV do table.insert(added, ARGV[i]) end
return delta(id, removed, added)
"""

# ARGV: lease, now, id, entries... -> flat kicks | error UNKNOWN
_REPLACE = _LIB + r"""
local id = ARGV[3]
if not is_member(id) then return redis.error_reply('UNKNOWN') end
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local mine = {}
local removed, added = {}, {}
for _, e in ipairs(redis.call('SMEMBERS', P .. ':wp:' .. id)) do
  mine[e] = true
  if not wanted[e] then table.insert(removed, e) end
end
for e, _ in pairs(wanted) do
  if not mine[e] then table.insert(added, e) end
end
table.sort(added)
return delta(id, removed, added)
"""

# ARGV: lease, now, ids... -> flat (id, master)
_MASTERS = _LIB + r"""
local out = {}
for i = 3, #ARGV do
  local m = redis.call('HGET', wkey(ARGV[i]), 'master')
  if m then table.insert(out, ARGV[i]); table.insert(out, m) end
end
return out
"""

# ARGV: lease, now, id, at, master -> 1 | 0 (only the master it is linked to shortens its lease)
_LAPSE = _LIB + r"""
local id, at, master = ARGV[3], tonumber(ARGV[4]), ARGV[5]
if not is_member(id) or redis.call('HGET', wkey(id), 'master') ~= master then return 0 end
local seen = tonumber(redis.call('HGET', wkey(id), 'seen'))
if at - LEASE < seen then redis.call('HSET', wkey(id), 'seen', string.format('%.17g', at - LEASE)) end
return 1
"""

# ARGV: lease, now, id, data -> 1 | 0
_TELL = _LIB + r"""
local m = redis.call('HGET', wkey(ARGV[3]), 'master')
if not m then return 0 end
redis.call('PUBLISH', P .. ':m:' .. m, ARGV[4])
return 1
"""

_SCRIPTS = {
    "register": _REGISTER, "heartbeat": _HEARTBEAT, "expire": _EXPIRE, "remove": _REMOVE,
    "state": _STATE, "workers": _WORKERS, "worker": _WORKER, "locate": _LOCATE, "claim": _CLAIM,
    "lookup": _LOOKUP, "release": _RELEASE, "report": _REPORT, "move": _MOVE,
    "announce": _ANNOUNCE, "delta": _DELTA, "replace": _REPLACE, "masters": _MASTERS, "tell": _TELL,
    "lapse": _LAPSE,
}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _entry(client: str, device: str) -> str:
    return f"{client}\n{device}"


def _kicks(flat: Sequence[Any]) -> list[Kick]:
    out = []
    for i in range(0, len(flat), 2):
        client, device = _s(flat[i + 1]).split("\n", 1)
        out.append(Kick(_s(flat[i]), client, device))
    return out


_METRIC_FIELDS = frozenset(f.name for f in attrs.fields(Metrics))


def _metrics(raw: Any) -> Metrics:
    if not raw:
        return Metrics()
    try:
        wire = msgpack.unpackb(raw)
        return Metrics(**{k: v for k, v in wire.items() if k in _METRIC_FIELDS})
    except (ValueError, TypeError, AttributeError):
        return Metrics()


def _info(wid: str, f: Sequence[Any]) -> WorkerInfo:
    url, cap, state, metrics, reg, seen = f
    return WorkerInfo(wid, _s(url), int(cap), _s(state), _metrics(metrics), float(reg), float(seen))


class RedisStore(Store):
    """The registry in Redis; use :func:`open_redis_store` (it runs the pub/sub listener)."""

    shared = True

    def __init__(self, client: coredis.Redis[bytes], *, master_id: str, lease: float = 5.0,
                 dedup_ttl: float = 600.0, max_workers: int = 1024, clock: Any = None) -> None:
        super().__init__()
        self.client = client
        self.master_id = master_id
        self.lease = lease
        self.dedup_ttl = dedup_ttl
        self.max_workers = max_workers
        self._clock = clock or time.time
        self._ttl_ms = str(int(2 * lease * 1000))
        self._scripts = {name: client.register_script(text.encode()) for name, text in _SCRIPTS.items()}
        self._version_hint = 0

    def now(self) -> float:
        return self._clock()

    @property
    def version_hint(self) -> int:
        return self._version_hint

    def _heard_version(self, v: int) -> None:
        if v != self._version_hint:
            self._version_hint = v
            self.on_change()

    async def _run(self, name: str, *args: Any, now: float | None = None) -> Any:
        t = self.now() if now is None else now
        argv = [repr(self.lease), repr(t), *[a if isinstance(a, (bytes, str)) else str(a) for a in args]]
        try:
            return await self._scripts[name](keys=[P], args=argv)
        except coredis.exceptions.ResponseError as exc:
            text = str(exc)
            if "UNKNOWN" in text:
                raise UnknownWorker(_s(args[-1] if name == "claim" else args[0])) from None
            if "FULL" in text:
                raise RegistryFull(f"at most {self.max_workers} workers") from None
            raise
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from None

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from None

    async def version(self) -> int:
        raw = await self._call(self.client.get(f"{P}:version"))
        v = int(raw) if raw else 0
        self._heard_version(v)
        return v

    async def register(self, worker_id: str, url: str, *, capacity: int, now: float) -> WorkerInfo:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        reg, metrics = await self._run("register", worker_id, url, capacity, self.master_id, self._ttl_ms,
                                       self.max_workers, now=now)
        await self.version()
        return WorkerInfo(worker_id, url, capacity, UP, _metrics(metrics), float(reg), now)

    async def heartbeat(self, worker_id: str, metrics: Metrics, *, now: float) -> bool:
        packed = msgpack.packb(metrics.to_wire())
        return bool(await self._run("heartbeat", worker_id, packed, self._ttl_ms, now=now))

    async def expire(self, now: float) -> list[str]:
        dead = sorted(_s(x) for x in await self._run("expire", now=now))
        if dead:
            await self.version()
        return dead

    async def _changed(self, result: Any) -> Any:
        await self.version()
        return result

    async def remove(self, worker_id: str) -> bool:
        return bool(await self._changed(await self._run("remove", worker_id)))

    async def set_draining(self, worker_id: str) -> bool:
        return bool(await self._changed(await self._run("state", worker_id, "draining")))

    async def set_drained(self, worker_id: str) -> bool:
        return bool(await self._changed(await self._run("state", worker_id, "drained")))

    async def set_up(self, worker_id: str) -> bool:
        return bool(await self._changed(await self._run("state", worker_id, "up")))

    async def workers(self, now: float) -> list[WorkerInfo]:
        flat = await self._run("workers", "1", now=now)
        out = [_info(_s(flat[i]), flat[i + 1:i + 7]) for i in range(0, len(flat), 7)]
        return sorted(out, key=lambda w: w.id)

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        f = await self._run("worker", worker_id)
        return _info(worker_id, f) if f and f[0] is not None else None

    async def claim_session(self, session: str, worker_id: str, *, now: float) -> str:
        return _s(await self._run("claim", session, worker_id, now=now))

    async def lookup_session(self, session: str) -> SessionInfo | None:
        w, m, q = await self._run("lookup", session)
        if w is None:
            return None
        return SessionInfo(session, _s(w), int(m or 0), int(q or 0))

    async def sessions(self, limit: int) -> tuple[int, list[SessionInfo]]:
        """How many sessions are owned (SCARD per worker), and at most ``limit`` of them (the dashboard)."""
        total = 0
        ids = [_s(w) for w in await self._call(self.client.smembers(f"{P}:members"))]
        for wid in ids:
            total += int(await self._call(self.client.scard(f"{P}:ws:{wid}")))
        listed: list[SessionInfo] = []
        for wid in ids:
            if len(listed) >= limit:
                break
            for name in await self._call(self.client.smembers(f"{P}:ws:{wid}")):
                if len(listed) >= limit:
                    break
                found = await self.lookup_session(_s(name))
                if found is not None:
                    listed.append(found)
        return total, listed

    async def release_session(self, session: str, worker_id: str) -> bool:
        return bool(await self._run("release", session, worker_id))

    async def report_members(self, session: str, worker_id: str, members: int) -> bool:
        if members < 0:
            raise ValueError("members must be >= 0")
        return bool(await self._run("report", session, worker_id, members))

    async def move_session(self, session: str, worker_id: str, seq: int) -> bool:
        return bool(await self._run("move", session, worker_id, seq))

    async def announce_sessions(self, worker_id: str, sessions: Mapping[str, int], *,
                                now: float) -> list[str]:
        if any(count < 0 for count in sessions.values()):
            raise ValueError("member counts must be >= 0")
        flat: list[Any] = []
        for name, count in sessions.items():
            flat += [name, count]
        return sorted(_s(x) for x in await self._run("announce", worker_id, *flat, now=now))

    async def locate(self, requests: Sequence[tuple[str, str | None]], *, now: float) -> list[Located]:
        flat: list[str] = []
        for session, worker in requests:
            flat += [session, worker or ""]
        got = await self._run("locate", *flat, now=now)
        out = []
        for i in range(0, len(got), 3):
            owner = _s(got[i])
            out.append(Located(owner, _s(got[i + 1]) or None, int(got[i + 2])) if owner else NOBODY)
        return out

    async def presence_delta(self, worker_id: str, added: Iterable[tuple[str, str]],
                             removed: Iterable[tuple[str, str]]) -> list[Kick]:
        rem = [_entry(c, d) for c, d in removed]
        add = [_entry(c, d) for c, d in added]
        return _kicks(await self._run("delta", worker_id, len(rem), *rem, *add))

    async def presence_replace(self, worker_id: str, entries: Iterable[tuple[str, str]]) -> list[Kick]:
        wanted = sorted({_entry(c, d) for c, d in entries})
        return _kicks(await self._run("replace", worker_id, *wanted))

    async def client_connections(self, client: str) -> list[tuple[str, str]]:
        got = await self._call(self.client.hgetall(f"{P}:p:{client}"))
        return sorted((_s(w), _s(d)) for d, w in got.items())

    async def workers_for(self, client: str, device: str | None = None) -> set[str]:
        if device is None:
            return {_s(w) for w in await self._call(self.client.hvals(f"{P}:p:{client}"))}
        wid = await self._call(self.client.hget(f"{P}:p:{client}", device))
        return set() if wid is None else {_s(wid)}

    async def seen_notify_id(self, notify_id: str, *, now: float) -> bool:
        fresh = await self._call(self.client.set(
            f"{P}:n:{notify_id}", b"1", condition=coredis.PureToken.NX, px=int(self.dedup_ttl * 1000)))
        return not fresh

    async def masters_of(self, worker_ids: Iterable[str]) -> dict[str, str]:
        ids = list(worker_ids)
        if not ids:
            return {}
        flat = await self._run("masters", *ids)
        return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def publish(self, master_id: str, data: bytes) -> None:
        await self._call(self.client.publish(f"{P}:m:{master_id}", data))

    async def lapse(self, worker_id: str, at: float) -> bool:
        return bool(await self._run("lapse", worker_id, repr(at), self.master_id))

    async def tell_worker(self, worker_id: str, data: bytes) -> bool:
        return bool(await self._run("tell", worker_id, data))

    async def flush(self) -> None:
        """Forget everything (tests)."""
        await self._call(self.client.flushdb())

    # ---------------------------------------------------------- listener

    async def listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hear version bumps and this master's messages until cancelled; resubscribe after outages."""
        channels = [f"{P}:version", f"{P}:m:{self.master_id}"]
        started = False
        while True:
            try:
                async with self.client.pubsub(channels=channels, ignore_subscribe_messages=True,
                                              retry_policy=_RESUBSCRIBE) as ps:
                    if not started:
                        started = True
                        task_status.started()
                    with contextlib.suppress(StoreUnavailable):
                        await self.version()
                    async for message in ps:
                        if message["type"] != "message":
                            continue
                        channel = _s(message["channel"])
                        data = message["data"]
                        if channel == channels[0]:
                            try:
                                self._heard_version(int(data))
                            except ValueError:
                                pass
                        else:
                            self.on_message(data if isinstance(data, bytes) else str(data).encode())
            except _LISTEN_ERRORS as exc:
                log.warning("redis pub/sub: %s; subscribing again", exc)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(0.2)


@contextlib.asynccontextmanager
async def open_redis_store(url: str, *, master_id: str, lease: float = 5.0, max_workers: int = 1024,
                           listen: bool = True, clock: Any = None) -> AsyncIterator[RedisStore]:
    """A connected RedisStore (with its pub/sub listener running unless ``listen`` is False)."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url, decode_responses=False, connect_timeout=1.0, stream_timeout=2.0)
    async with client:
        store = RedisStore(client, master_id=master_id, lease=lease, max_workers=max_workers, clock=clock)
        if not listen:
            yield store
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(store.listen)
            yield store
            nursery.cancel_scope.cancel()
