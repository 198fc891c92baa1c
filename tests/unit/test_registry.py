"""The master registry: example tests per behaviour, then a stateful test against a model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mc.master.registry import (
    DRAINING,
    UP,
    Kick,
    Metrics,
    Registry,
    RegistryFull,
    SessionInfo,
    UnknownWorker,
)


def make(*ids: str, now: float = 0.0, **kwargs: float) -> Registry:
    reg = Registry(**kwargs)
    for wid in ids:
        reg.register(wid, f"ws://{wid}", capacity=100, now=now)
    return reg


# ------------------------------------------------------------------ workers


def test_register_lists_worker_up_with_zero_metrics() -> None:
    reg = Registry()
    info = reg.register("w1", "ws://h:7101", capacity=50, now=1.0)
    assert (info.id, info.url, info.capacity, info.state) == ("w1", "ws://h:7101", 50, UP)
    assert info.metrics == Metrics()
    assert reg.workers(1.0) == [info]
    assert reg.worker("w1") == info
    assert reg.worker("nope") is None


def test_workers_sorted_by_id() -> None:
    reg = make("w3", "w1", "w2")
    assert [w.id for w in reg.workers(0.0)] == ["w1", "w2", "w3"]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Registry().register("w1", "ws://x", capacity=0, now=0.0)


def test_lease_boundary_live_at_exactly_lease_dead_just_after() -> None:
    reg = make("w1", now=10.0)
    assert reg.expire(15.0) == []
    assert [w.id for w in reg.workers(15.0)] == ["w1"]
    assert reg.workers(15.001) == []
    assert reg.expire(15.001) == ["w1"]
    assert reg.worker("w1") is None


def test_heartbeat_renews_lease_and_stores_metrics() -> None:
    reg = make("w1")
    m = Metrics(connections=7, sessions=2, cpu_percent=12.5)
    assert reg.heartbeat("w1", m, now=4.0)
    assert reg.expire(8.0) == []
    info = reg.worker("w1")
    assert info is not None and info.metrics == m and info.last_seen == 4.0


def test_heartbeat_unknown_or_lapsed_is_refused() -> None:
    reg = make("w1")
    assert not reg.heartbeat("ghost", Metrics(), now=0.0)
    assert not reg.heartbeat("w1", Metrics(), now=5.5)  # lapsed, not yet purged
    assert reg.expire(5.5) == ["w1"]
    assert not reg.heartbeat("w1", Metrics(), now=5.6)


def test_reregister_live_refreshes_and_keeps_state() -> None:
    reg = make("w1")
    reg.heartbeat("w1", Metrics(connections=3), now=1.0)
    assert reg.claim_session("s", "w1", now=1.0) == "w1"
    reg.presence_delta("w1", [("alice", "phone")], [])
    reg.set_draining("w1")
    info = reg.register("w1", "ws://new", capacity=9, now=2.0)
    assert (info.url, info.capacity, info.state, info.last_seen) == ("ws://new", 9, UP, 2.0)
    assert info.metrics.connections == 3
    assert info.registered_at == 0.0
    assert reg.lookup_session("s") == SessionInfo("s", "w1", 0)
    assert reg.client_connections("alice") == [("w1", "phone")]


def test_reregister_after_lapse_starts_afresh() -> None:
    reg = make("w1")
    reg.claim_session("s", "w1", now=0.0)
    reg.presence_delta("w1", [("alice", "phone")], [])
    info = reg.register("w1", "ws://w1", capacity=100, now=6.0)  # lapsed, expire() not run
    assert info.registered_at == 6.0
    assert reg.lookup_session("s") is None
    assert reg.client_connections("alice") == []
    assert reg.expire(6.0) == []


def test_max_workers() -> None:
    reg = make("w1", "w2", max_workers=2)
    with pytest.raises(RegistryFull):
        reg.register("w3", "ws://w3", capacity=1, now=0.0)
    reg.register("w2", "ws://w2b", capacity=1, now=0.0)  # a known id still re-registers
    reg.remove("w1")
    reg.register("w3", "ws://w3", capacity=1, now=0.0)


def test_expire_purges_sessions_and_presence() -> None:
    reg = make("w1", "w2")
    reg.claim_session("s1", "w1", now=0.0)
    reg.claim_session("s2", "w2", now=0.0)
    reg.presence_delta("w1", [("alice", "phone"), ("bob", "web")], [])
    reg.presence_delta("w2", [("alice", "tablet")], [])
    reg.heartbeat("w2", Metrics(), now=3.0)
    assert reg.expire(6.0) == ["w1"]
    assert reg.lookup_session("s1") is None
    assert reg.lookup_session("s2") == SessionInfo("s2", "w2", 0)
    assert reg.client_connections("alice") == [("w2", "tablet")]
    assert reg.client_connections("bob") == []
    assert reg.workers_for("bob") == set()


def test_remove_purges_and_reports_unknown() -> None:
    reg = make("w1")
    reg.claim_session("s", "w1", now=0.0)
    reg.presence_delta("w1", [("alice", "phone")], [])
    assert reg.remove("w1")
    assert not reg.remove("w1")
    assert reg.lookup_session("s") is None
    assert reg.workers_for("alice") == set()


def test_drain() -> None:
    reg = make("w1")
    assert reg.set_draining("w1")
    assert not reg.set_draining("ghost")
    assert [w.state for w in reg.workers(0.0)] == [DRAINING]
    reg.heartbeat("w1", Metrics(), now=1.0)
    assert reg.worker("w1").state == DRAINING  # type: ignore[union-attr]


def test_version_bumps_on_membership_changes_only() -> None:
    reg = Registry()
    versions = [reg.version]

    def bumped() -> bool:
        versions.append(reg.version)
        return versions[-1] > versions[-2]

    reg.register("w1", "ws://a", capacity=5, now=0.0)
    assert bumped()
    reg.register("w1", "ws://a", capacity=5, now=1.0)
    assert not bumped(), "re-register without change"
    reg.heartbeat("w1", Metrics(connections=4), now=1.5)
    assert not bumped(), "metrics"
    reg.claim_session("s", "w1", now=1.5)
    reg.presence_delta("w1", [("c", "d")], [])
    reg.seen_notify_id("n", now=1.5)
    assert not bumped(), "sessions, presence, dedup"
    reg.register("w1", "ws://b", capacity=5, now=2.0)
    assert bumped(), "url"
    reg.register("w1", "ws://b", capacity=6, now=2.0)
    assert bumped(), "capacity"
    assert reg.set_draining("w1")
    assert bumped(), "drain"
    assert reg.set_draining("w1")
    assert not bumped(), "drain again"
    reg.register("w1", "ws://b", capacity=6, now=2.0)
    assert bumped(), "back up"
    reg.register("w2", "ws://c", capacity=6, now=2.0)
    assert bumped(), "new worker"
    assert reg.expire(7.0) == []
    assert not bumped(), "nothing expired"
    assert reg.expire(7.5) == ["w1", "w2"]
    assert bumped(), "expiry"
    reg.register("w1", "ws://b", capacity=6, now=8.0)
    bumped()
    assert reg.remove("w1")
    assert bumped(), "remove"
    assert not reg.remove("w1")
    assert not bumped(), "remove unknown"


def test_totals_sum_live_workers() -> None:
    reg = make("w1", "w2", "w3")
    reg.heartbeat("w1", Metrics(1, 2, 3, 4.0, 5.0, 60.0, 700), now=1.0)
    reg.heartbeat("w2", Metrics(10, 20, 30, 40.0, 50.0, 25.0, 7000), now=1.0)
    reg.set_draining("w2")
    totals = reg.totals(5.5)  # w3 lapsed: not counted
    assert (totals.workers, totals.draining) == (2, 1)
    assert totals.metrics == Metrics(11, 22, 33, 44.0, 55.0, 85.0, 7700)


def test_metrics_reject_negative_and_wrong_types() -> None:
    with pytest.raises(ValueError):
        Metrics(connections=-1)
    with pytest.raises(ValueError, match="connections must be a non-negative integer"):
        Metrics(connections=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- dead links


def test_lapse_brings_the_expiry_forward_to_at() -> None:
    reg = make("w1", "w2")
    reg.claim_session("s", "w1", now=0.0)
    reg.presence_delta("w1", [("alice", "phone")], [])
    reg.heartbeat("w1", Metrics(), now=2.0)
    assert reg.lapse("w1", at=3.0)  # the link closed at 2.0; grace 1 s
    assert [w.id for w in reg.workers(3.0)] == ["w1", "w2"]  # live up to `at` exactly
    assert reg.expire(3.0) == []
    assert [w.id for w in reg.workers(3.001)] == ["w2"]  # dead the instant after
    assert reg.expire(3.001) == ["w1"]
    assert reg.lookup_session("s") is None and reg.client_connections("alice") == []


def test_lapse_never_extends_a_lease() -> None:
    reg = make("w1")  # lease ends at 5.0
    assert reg.lapse("w1", at=9.0)
    assert reg.expire(5.001) == ["w1"]
    reg = make("w1")
    assert reg.lapse("w1", at=1.0) and reg.lapse("w1", at=4.0)  # the earlier one holds
    assert reg.expire(1.001) == ["w1"]


def test_lapsed_worker_that_registers_again_in_the_grace_keeps_its_state() -> None:
    reg = make("w1")
    reg.claim_session("s", "w1", now=0.0)
    reg.presence_delta("w1", [("alice", "phone")], [])
    assert reg.lapse("w1", at=1.5)
    version = reg.version
    info = reg.register("w1", "ws://w1", capacity=100, now=1.2)  # back within the grace
    assert info.last_seen == 1.2 and info.registered_at == 0.0
    assert reg.expire(2.0) == []  # the lease runs from the registration again: to 6.2
    assert reg.expire(6.2) == [] and reg.expire(6.201) == ["w1"]
    assert reg.version == version + 1  # only the purge moved it, not the lapse nor the re-register


def test_lapsed_worker_registering_after_the_grace_starts_afresh() -> None:
    reg = make("w1")
    reg.claim_session("s", "w1", now=0.0)
    assert reg.lapse("w1", at=1.0)
    info = reg.register("w1", "ws://w1", capacity=100, now=1.5)  # too late, even before expire()
    assert info.registered_at == 1.5 and reg.lookup_session("s") is None


def test_lapse_also_ends_a_lapsed_workers_rights() -> None:
    reg = make("w1", "w2")
    reg.claim_session("s", "w1", now=0.0)
    assert reg.lapse("w1", at=1.0)
    assert not reg.heartbeat("w1", Metrics(), now=1.1)  # too late: must register again
    assert reg.claim_session("s", "w2", now=1.1) == "w2"  # the session goes to a live claimer
    with pytest.raises(UnknownWorker):
        reg.claim_session("t", "w1", now=1.1)


def test_lapse_of_a_non_member_is_false() -> None:
    reg = make("w1")
    assert not reg.lapse("ghost", at=1.0)
    reg.remove("w1")  # it left in order before its link closed
    assert not reg.lapse("w1", at=1.0)
    assert reg.version == 2 and reg.workers(0.0) == []


# ------------------------------------------------------------ chat sessions


def test_claim_race_first_wins_others_redirect() -> None:
    reg = make("w1", "w2", "w3")
    assert reg.claim_session("room", "w2", now=0.0) == "w2"
    assert reg.claim_session("room", "w1", now=0.0) == "w2"
    assert reg.claim_session("room", "w3", now=0.0) == "w2"
    assert reg.claim_session("room", "w2", now=0.0) == "w2"  # owner claiming again: idempotent
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 0)


def test_claim_by_unknown_or_lapsed_worker_raises() -> None:
    reg = make("w1")
    with pytest.raises(UnknownWorker) as err:
        reg.claim_session("room", "ghost", now=0.0)
    assert err.value.worker_id == "ghost"
    with pytest.raises(UnknownWorker):
        reg.claim_session("room", "w1", now=5.5)
    assert reg.lookup_session("room") is None


def test_claim_takes_over_from_lapsed_owner_before_purge() -> None:
    reg = make("w1")
    reg.claim_session("room", "w1", now=0.0)
    reg.register("w2", "ws://w2", capacity=1, now=3.0)
    assert reg.claim_session("room", "w1", now=4.0) == "w1"
    assert reg.claim_session("room", "w2", now=6.0) == "w2"
    assert reg.expire(6.0) == ["w1"]
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 0)


def test_release_only_by_owner() -> None:
    reg = make("w1", "w2")
    reg.claim_session("room", "w1", now=0.0)
    assert not reg.release_session("room", "w2")
    assert reg.lookup_session("room") is not None
    assert reg.release_session("room", "w1")
    assert reg.lookup_session("room") is None
    assert not reg.release_session("room", "w1")
    assert reg.claim_session("room", "w2", now=0.0) == "w2"


def test_report_members_only_by_owner() -> None:
    reg = make("w1", "w2")
    reg.claim_session("room", "w1", now=0.0)
    assert reg.report_members("room", "w1", 3)
    assert not reg.report_members("room", "w2", 9)
    assert not reg.report_members("nothing", "w1", 1)
    assert reg.lookup_session("room") == SessionInfo("room", "w1", 3)
    with pytest.raises(ValueError):
        reg.report_members("room", "w1", -1)


def test_announce_sessions_claims_free_replaces_own_and_returns_conflicts() -> None:
    reg = make("w1", "w2")
    reg.claim_session("old", "w1", now=0.0)  # w1 no longer has it
    reg.claim_session("taken", "w2", now=0.0)  # won by w2 while w1 was unknown
    conflicts = reg.announce_sessions("w1", {"taken": 2, "free": 4, "mine": 1}, now=0.0)
    assert conflicts == ["taken"]
    assert reg.lookup_session("old") is None
    assert reg.lookup_session("free") == SessionInfo("free", "w1", 4)
    assert reg.lookup_session("mine") == SessionInfo("mine", "w1", 1)
    assert reg.lookup_session("taken") == SessionInfo("taken", "w2", 0)
    reg.remove("w1")
    assert reg.lookup_session("free") is None  # the announced sessions are purged with w1


def test_announce_sessions_takes_over_from_lapsed_owner() -> None:
    reg = make("w1")
    reg.claim_session("room", "w1", now=0.0)
    reg.register("w2", "ws://w2", capacity=1, now=5.0)
    assert reg.announce_sessions("w2", {"room": 2}, now=5.5) == []
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 2)
    assert reg.expire(5.5) == ["w1"]
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 2)


def test_announce_sessions_by_lapsed_worker_raises() -> None:
    reg = make("w1")
    with pytest.raises(UnknownWorker):
        reg.announce_sessions("w1", {"room": 1}, now=5.5)


# ----------------------------------------------------------------- presence


def test_presence_delta_and_queries() -> None:
    reg = make("w1", "w2")
    assert reg.presence_delta("w1", [("alice", "phone"), ("alice", "web")], []) == []
    assert reg.presence_delta("w2", [("alice", "tablet")], []) == []
    assert reg.client_connections("alice") == [("w1", "phone"), ("w1", "web"), ("w2", "tablet")]
    assert reg.workers_for("alice") == {"w1", "w2"}
    assert reg.workers_for("alice", "tablet") == {"w2"}
    assert reg.workers_for("alice", "watch") == set()
    assert reg.workers_for("bob") == set()
    reg.presence_delta("w1", [], [("alice", "phone"), ("alice", "web")])
    assert reg.client_connections("alice") == [("w2", "tablet")]


def test_cross_worker_replacement_kicks_old_holder() -> None:
    reg = make("w1", "w2")
    reg.presence_delta("w1", [("alice", "phone")], [])
    kicks = reg.presence_delta("w2", [("alice", "phone")], [])
    assert kicks == [Kick("w1", "alice", "phone")]
    assert reg.client_connections("alice") == [("w2", "phone")]
    # w1 closes the old connection and reports it: that must not remove w2's entry
    assert reg.presence_delta("w1", [], [("alice", "phone")]) == []
    assert reg.client_connections("alice") == [("w2", "phone")]
    # the same worker adding again is no replacement
    assert reg.presence_delta("w2", [("alice", "phone")], []) == []


def test_presence_delta_removes_before_adding() -> None:
    reg = make("w1")
    reg.presence_delta("w1", [("alice", "phone")], [("alice", "phone")])
    assert reg.client_connections("alice") == [("w1", "phone")]


def test_presence_replace() -> None:
    reg = make("w1", "w2")
    reg.presence_delta("w1", [("alice", "phone"), ("bob", "web")], [])
    reg.presence_delta("w2", [("carol", "web")], [])
    kicks = reg.presence_replace("w1", [["bob", "web"], ("carol", "web"), ("dave", "x")])
    assert kicks == [Kick("w2", "carol", "web")]
    assert reg.client_connections("alice") == []
    assert reg.client_connections("bob") == [("w1", "web")]
    assert reg.client_connections("carol") == [("w1", "web")]
    assert reg.client_connections("dave") == [("w1", "x")]
    reg.remove("w2")
    assert reg.client_connections("carol") == [("w1", "web")]


def test_presence_by_non_member_raises() -> None:
    reg = make("w1")
    with pytest.raises(UnknownWorker):
        reg.presence_delta("ghost", [("alice", "phone")], [])
    with pytest.raises(UnknownWorker):
        reg.presence_replace("ghost", [])


# ------------------------------------------------------------- notify dedup


def test_notify_id_dedup_within_ttl_only() -> None:
    reg = Registry(dedup_ttl=10.0)
    assert not reg.seen_notify_id("n1", now=0.0)
    assert reg.seen_notify_id("n1", now=9.999)
    assert not reg.seen_notify_id("n1", now=10.0)  # exactly ttl later: usable again
    assert reg.seen_notify_id("n1", now=19.0)


def test_notify_id_dedup_evicts_oldest_at_bound() -> None:
    reg = Registry(dedup_max=3)
    for i, name in enumerate(["a", "b", "c"]):
        assert not reg.seen_notify_id(name, now=float(i))
    assert not reg.seen_notify_id("d", now=3.0)  # evicts "a"
    assert reg.seen_notify_id("b", now=4.0)
    assert reg.seen_notify_id("d", now=4.0)
    assert not reg.seen_notify_id("a", now=4.0)  # forgotten early, documented


def test_constructor_validates() -> None:
    for bad in ({"lease": 0}, {"dedup_ttl": -1}, {"dedup_max": 0}, {"max_workers": 0}):
        with pytest.raises(ValueError):
            Registry(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------- stateful vs a model

WORKERS = ["w1", "w2", "w3"]
SESSIONS = ["s1", "s2", "s3"]
CLIENTS = ["alice", "bob"]
DEVICES = ["phone", "web"]
ENTRIES = [(c, d) for c in CLIENTS for d in DEVICES]
LEASE = 5.0

entries = st.lists(st.sampled_from(ENTRIES), max_size=4, unique=True)


class RegistryMachine(RuleBasedStateMachine):
    """Drive the Registry and a naive reference model (plain dicts, full scans) in lockstep.

    The model restates the documented semantics in the most direct way; every
    answer and the whole observable state must agree after every step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reg = self.make_registry()
        self.now = 0.0
        self.version = self.reg.version
        self.members: dict[str, dict[str, object]] = {}  # id -> url, capacity, state, last_seen
        self.sessions: dict[str, tuple[str, int]] = {}  # session -> (owner, members)
        self.presence: dict[tuple[str, str], str] = {}  # (client, device) -> worker

    def make_registry(self) -> Any:
        """The registry under test: the pure one here; a Store behind a sync adapter in
        tests/unit/test_stores.py (the same machine against MemoryStore and RedisStore)."""
        return Registry(lease=LEASE)

    # model helpers

    def live(self, wid: str) -> bool:
        m = self.members.get(wid)
        return m is not None and self.now - m["last_seen"] <= LEASE  # type: ignore[operator]

    def purge(self, wid: str) -> None:
        del self.members[wid]
        self.sessions = {s: v for s, v in self.sessions.items() if v[0] != wid}
        self.presence = {e: w for e, w in self.presence.items() if w != wid}

    def check_version(self, bump: bool) -> None:
        if bump:
            assert self.reg.version > self.version
        else:
            assert self.reg.version == self.version
        self.version = self.reg.version

    def model_delta(self, wid: str, added: list, removed: list) -> list[Kick]:
        for e in removed:
            if self.presence.get(e) == wid:
                del self.presence[e]
        kicks = []
        for e in added:
            prev = self.presence.get(e)
            self.presence[e] = wid
            if prev is not None and prev != wid:
                kicks.append(Kick(prev, *e))
        return kicks

    # rules

    @initialize()
    def start_cluster(self) -> None:
        """Begin with every worker registered, so sessions and presence start at once."""
        for wid in WORKERS:
            self.register(wid, "ws://a", 10)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.5, 5.0, 6.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(silent=st.sampled_from(WORKERS), seconds=st.integers(1, 7))
    def cluster_runs(self, silent: str, seconds: int) -> None:
        """Time passes while every live worker but ``silent`` heartbeats each second.

        A cluster where one worker lapses while the others stay live is the
        interesting case (take-overs of its sessions before the purge), and
        random single heartbeats rarely reach it.
        """
        for _ in range(seconds):
            for wid in WORKERS:
                if wid != silent and self.live(wid):
                    assert self.reg.heartbeat(wid, Metrics(), now=self.now)
                    self.members[wid]["last_seen"] = self.now
            self.now += 1.0

    @rule(
        wid=st.sampled_from(WORKERS),
        url=st.sampled_from(["ws://a", "ws://b"]),
        capacity=st.sampled_from([1, 10]),
    )
    def register(self, wid: str, url: str, capacity: int) -> None:
        info = self.reg.register(wid, url, capacity=capacity, now=self.now)
        bump = False
        if wid in self.members and not self.live(wid):
            self.purge(wid)
            bump = True
        old = self.members.get(wid)
        if old is None or (old["url"], old["capacity"], old["state"]) != (url, capacity, UP):
            bump = True
        self.members[wid] = {"url": url, "capacity": capacity, "state": UP, "last_seen": self.now}
        assert (info.id, info.url, info.capacity, info.state) == (wid, url, capacity, UP)
        self.check_version(bump)

    @rule(wid=st.sampled_from(WORKERS), conns=st.integers(0, 20))
    def heartbeat(self, wid: str, conns: int) -> None:
        ok = self.live(wid)
        assert self.reg.heartbeat(wid, Metrics(connections=conns), now=self.now) == ok
        if ok:
            self.members[wid]["last_seen"] = self.now
        self.check_version(False)

    @rule(wid=st.sampled_from(WORKERS), grace=st.sampled_from([0.0, 1.0, 3.0, 9.0]))
    def link_lost(self, wid: str, grace: float) -> None:
        """The worker's control link closed without a leave: dead ``grace`` s from now."""
        m = self.members.get(wid)
        assert self.reg.lapse(wid, self.now + grace) == (m is not None)
        if m is not None:
            m["last_seen"] = min(m["last_seen"], self.now + grace - LEASE)  # type: ignore[type-var]
        self.check_version(False)

    @rule()
    def expire(self) -> None:
        dead = sorted(w for w in self.members if not self.live(w))
        for wid in dead:
            self.purge(wid)
        assert self.reg.expire(self.now) == dead
        self.check_version(bool(dead))
        live = {w.id for w in self.reg.workers(self.now)}
        for s in SESSIONS:
            info = self.reg.lookup_session(s)
            assert info is None or info.worker_id in live
        for c in CLIENTS:
            assert {w for w, _ in self.reg.client_connections(c)} <= live

    @rule(wid=st.sampled_from(WORKERS))
    def remove(self, wid: str) -> None:
        known = wid in self.members
        if known:
            self.purge(wid)
        assert self.reg.remove(wid) == known
        self.check_version(known)

    @rule(wid=st.sampled_from(WORKERS))
    def drain(self, wid: str) -> None:
        m = self.members.get(wid)
        assert self.reg.set_draining(wid) == (m is not None)
        bump = m is not None and m["state"] == UP
        if m is not None:
            m["state"] = DRAINING
        self.check_version(bump)

    @rule(session=st.sampled_from(SESSIONS), wid=st.sampled_from(WORKERS))
    def claim(self, session: str, wid: str) -> None:
        if not self.live(wid):
            with pytest.raises(UnknownWorker):
                self.reg.claim_session(session, wid, now=self.now)
            return
        current = self.sessions.get(session)
        if current is not None and (current[0] == wid or self.live(current[0])):
            expected = current[0]
        else:
            self.sessions[session] = (wid, 0)
            expected = wid
        assert self.reg.claim_session(session, wid, now=self.now) == expected

    @rule(session=st.sampled_from(SESSIONS), wid=st.sampled_from(WORKERS))
    def release(self, session: str, wid: str) -> None:
        owned = self.sessions.get(session, ("",))[0] == wid
        if owned:
            del self.sessions[session]
        assert self.reg.release_session(session, wid) == owned

    @rule(session=st.sampled_from(SESSIONS), wid=st.sampled_from(WORKERS), n=st.integers(0, 9))
    def report(self, session: str, wid: str, n: int) -> None:
        owned = self.sessions.get(session, ("",))[0] == wid
        if owned:
            self.sessions[session] = (wid, n)
        assert self.reg.report_members(session, wid, n) == owned

    @rule(
        wid=st.sampled_from(WORKERS),
        announced=st.dictionaries(st.sampled_from(SESSIONS), st.integers(0, 9), max_size=3),
    )
    def announce(self, wid: str, announced: dict[str, int]) -> None:
        if not self.live(wid):
            with pytest.raises(UnknownWorker):
                self.reg.announce_sessions(wid, announced, now=self.now)
            return
        self.sessions = {
            s: v for s, v in self.sessions.items() if v[0] != wid or s in announced
        }
        conflicts = []
        for s, n in announced.items():
            current = self.sessions.get(s)
            if current is not None and current[0] != wid and self.live(current[0]):
                conflicts.append(s)
            else:
                self.sessions[s] = (wid, n)
        assert self.reg.announce_sessions(wid, announced, now=self.now) == sorted(conflicts)

    @rule(wid=st.sampled_from(WORKERS), added=entries, removed=entries)
    def presence_delta(self, wid: str, added: list, removed: list) -> None:
        if wid not in self.members:
            with pytest.raises(UnknownWorker):
                self.reg.presence_delta(wid, added, removed)
            return
        expected = self.model_delta(wid, added, removed)
        assert self.reg.presence_delta(wid, added, removed) == expected

    @rule(wid=st.sampled_from(WORKERS), wanted=entries)
    def presence_replace(self, wid: str, wanted: list) -> None:
        if wid not in self.members:
            with pytest.raises(UnknownWorker):
                self.reg.presence_replace(wid, wanted)
            return
        mine = {e for e, w in self.presence.items() if w == wid}
        expected = self.model_delta(wid, sorted(set(wanted) - mine), sorted(mine - set(wanted)))
        assert self.reg.presence_replace(wid, wanted) == expected

    # invariants

    @invariant()
    def workers_agree(self) -> None:
        got = [(w.id, w.url, w.capacity, w.state) for w in self.reg.workers(self.now)]
        want = [
            (wid, m["url"], m["capacity"], m["state"])
            for wid, m in sorted(self.members.items())
            if self.live(wid)
        ]
        assert got == want
        for wid in WORKERS:
            assert (self.reg.worker(wid) is not None) == (wid in self.members)

    @invariant()
    def sessions_agree_and_have_one_member_owner(self) -> None:
        for s in SESSIONS:
            info = self.reg.lookup_session(s)
            want = self.sessions.get(s)
            assert (None if info is None else (info.worker_id, info.members)) == want
            if info is not None:
                assert self.reg.worker(info.worker_id) is not None

    @invariant()
    def presence_agrees_and_is_unique(self) -> None:
        for c in CLIENTS:
            got = self.reg.client_connections(c)
            want = sorted((w, d) for (cc, d), w in self.presence.items() if cc == c)
            assert got == want
            devices = [d for _, d in got]
            assert len(devices) == len(set(devices)), "a (client, device) on two workers"
            assert self.reg.workers_for(c) == {w for w, _ in got}
            for w, d in got:
                assert self.reg.workers_for(c, d) == {w}
                assert self.reg.worker(w) is not None


RegistryMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_registry_matches_model = RegistryMachine.TestCase


def test_drain_states_and_a_drained_worker_holds_nothing() -> None:
    reg = make("w1")
    reg.heartbeat("w1", Metrics(connections=40), now=0.5)
    assert not reg.set_drained("w1")  # not draining
    assert reg.set_draining("w1") and reg.worker("w1").state == "draining"  # type: ignore[union-attr]
    version = reg.version
    assert reg.set_drained("w1")
    info = reg.worker("w1")
    assert info is not None and info.state == "drained" and info.metrics.connections == 0
    assert reg.version == version + 1
    assert reg.set_draining("w1") and reg.worker("w1").state == "drained"  # type: ignore[union-attr]
    assert reg.set_up("w1") and reg.worker("w1").state == "up"  # type: ignore[union-attr]
    assert not reg.set_up("nobody") and not reg.set_drained("nobody")


def test_move_session_carries_seq_to_the_new_owner() -> None:
    reg = make("w1", "w2")
    reg.claim_session("room", "w1", now=1.0)
    reg.report_members("room", "w1", 3)
    assert reg.move_session("room", "w2", 41)
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 3, 41)
    assert not reg.release_session("room", "w1")  # no longer the owner's to release
    reg.report_members("room", "w2", 2)
    assert reg.lookup_session("room") == SessionInfo("room", "w2", 2, 41)  # the seq stays
    assert not reg.move_session("nothing", "w2", 1) and not reg.move_session("room", "nobody", 1)
    reg.remove("w2")
    assert reg.lookup_session("room") is None
