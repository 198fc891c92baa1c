"""Topic names, patterns, the reference matcher and the subscription index.

The index (a segment trie with a match cache) is checked differentially
against the naive ``pattern_matches`` over small alphabets, so that matches
actually happen, after every add and remove.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mc.protocol import SubscriptionIndex, is_name, is_pattern, is_topic, pattern_matches
from mc.protocol import topics as topics_mod

SEGS = ["a", "b", "c"]
# every topic of 1 to 4 segments over SEGS: 3 + 9 + 27 + 81
ALL_TOPICS = [".".join(p) for n in range(1, 5) for p in itertools.product(SEGS, repeat=n)]

small_topics = st.lists(st.sampled_from(SEGS), min_size=1, max_size=4).map(".".join)


@st.composite
def small_patterns(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=3))
    if not segs or draw(st.booleans()):
        segs.append(">")
    return ".".join(segs)


entries = st.sampled_from(["e1", "e2", "e3"])


# ------------------------------------------------------------ names.py


@pytest.mark.parametrize(
    "value",
    ["a", "A-Z_0.9:@", "x" * 128, "a..b", ".", "-", "@home", "alice@example.com"],
)
def test_is_name_accepts(value: str) -> None:
    assert is_name(value)


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a b", "a/b", "a*", ">", "é", "a\n", "\na", "a\x00", "a,b", 5, None, b"a",
     ["a"]],
    ids=repr,
)
def test_is_name_refuses(value: object) -> None:
    assert not is_name(value)


@pytest.mark.parametrize("value", ["a", "a.b", "a.b.c", "A-1:@_.x", "x" * 128, "x." * 63 + "yz"])
def test_is_topic_accepts(value: str) -> None:
    assert is_topic(value)


@pytest.mark.parametrize(
    "value",
    ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "*", ">", "a b", "x" * 129, "a.b\n", 1, None],
    ids=repr,
)
def test_is_topic_refuses(value: object) -> None:
    assert not is_topic(value)


@pytest.mark.parametrize(
    "value",
    ["a", "a.b", "*", ">", "a.*", "a.>", "*.*", "*.>", "a.*.b.>", "x" * 128],
)
def test_is_pattern_accepts(value: str) -> None:
    assert is_pattern(value)


@pytest.mark.parametrize(
    "value",
    ["", ".", "a.", ".a", "a..b", ">.a", "a.>.b", "a>", "a*", "*a", "**", ">>", "a.b>",
     "x" * 129, "a b", "é", 5, None, ["a"]],
    ids=repr,
)
def test_is_pattern_refuses(value: object) -> None:
    assert not is_pattern(value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab.*>: é", max_size=10))
def test_names_nest(value: str) -> None:
    """topic => name and topic => pattern; a name without empty segments is a topic."""
    if is_topic(value):
        assert is_name(value) and is_pattern(value)
    if is_name(value) and "" not in value.split("."):
        assert is_topic(value)


# ------------------------------------------------------ pattern semantics


@pytest.mark.parametrize(
    "pattern,topic,expected",
    [
        ("a", "a", True),
        ("a", "b", False),
        ("a", "a.b", False),
        ("a.b", "a", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*.b", "a.b", True),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),  # '>' needs at least one segment
        ("a.>", "b.c", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
    ],
)
def test_pattern_semantics(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(pattern, topic) is expected
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(pattern, "x")
    assert index.match(topic) == (["x"] if expected else [])


def test_match_returns_entry_once_per_matching_pattern() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for p in ("a.b", "a.*", "*.b", "a.>", ">", "c"):
        index.add(p, "x")
    assert index.match("a.b") == ["x"] * 5
    assert len(index) == 6


def test_remove_missing_returns_false() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert not index.remove("a", "x")
    index.add("a.b", "x")
    assert not index.remove("a.b", "y")
    assert not index.remove("a.c", "x")
    assert not index.remove("a", "x")
    assert not index.remove("a.>", "x")
    assert not index.remove("a.b.c", "x")
    assert not index.remove("*.b", "x")
    assert index.remove("a.b", "x")
    assert not index.remove("a.b", "x")
    assert len(index) == 0 and index._root.empty()


def test_cache_is_invalidated() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    assert index.match("a.b") == []
    index.add("a.*", "x")
    assert index.match("a.b") == ["x"]
    index.add(">", "y")
    assert sorted(index.match("a.b")) == ["x", "y"]
    index.remove("a.*", "x")
    assert index.match("a.b") == ["y"]


def test_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics_mod, "MATCH_CACHE_SIZE", 4)
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a.>", "x")
    for topic in ALL_TOPICS:
        assert index.match(topic) == (["x"] if pattern_matches("a.>", topic) else [])
        assert len(index._cache) <= 4


# ------------------------------------------------ index vs reference model


def _naive(registrations: list[tuple[str, str]], topic: str) -> Counter[str]:
    return Counter(e for p, e in registrations if pattern_matches(p, topic))


def _node_count(node: object) -> int:
    n = 0
    stack = [node]
    while stack:
        cur = stack.pop()
        kids = list(cur.children.values()) + ([cur.star] if cur.star is not None else [])  # type: ignore[attr-defined]
        n += len(kids)
        stack.extend(kids)
    return n


def _needed_nodes(registrations: list[tuple[str, str]]) -> int:
    """Trie nodes the live patterns need: one per distinct prefix ('>' has none)."""
    prefixes = set()
    for pattern, _ in registrations:
        segs = pattern.split(".")
        if segs[-1] == ">":
            segs = segs[:-1]
        for k in range(1, len(segs) + 1):
            prefixes.add(tuple(segs[:k]))
    return len(prefixes)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index: SubscriptionIndex[str] = SubscriptionIndex()
        self.model: list[tuple[str, str]] = []

    @rule(pattern=small_patterns(), entry=entries)
    def add(self, pattern: str, entry: str) -> None:
        self.index.add(pattern, entry)
        self.model.append((pattern, entry))

    @rule(pattern=small_patterns(), entry=entries)
    def remove_any(self, pattern: str, entry: str) -> None:
        present = (pattern, entry) in self.model
        assert self.index.remove(pattern, entry) is present
        if present:
            self.model.remove((pattern, entry))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        pattern, entry = data.draw(st.sampled_from(self.model))
        assert self.index.remove(pattern, entry)
        self.model.remove((pattern, entry))

    @rule(topic=small_topics)
    def match_one(self, topic: str) -> None:
        assert Counter(self.index.match(topic)) == _naive(self.model, topic)
        # a second lookup comes from the cache and must agree too
        assert Counter(self.index.match(topic)) == _naive(self.model, topic)

    @invariant()
    def agrees_everywhere(self) -> None:
        # also fills the cache for every topic, so a stale cache after the next
        # add or remove would show up here
        for topic in ALL_TOPICS:
            assert Counter(self.index.match(topic)) == _naive(self.model, topic), topic

    @invariant()
    def pruned(self) -> None:
        assert len(self.index) == len(self.model)
        assert _node_count(self.index._root) == _needed_nodes(self.model)
        if not self.model:
            assert self.index._root.empty()


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestIndexMachine = IndexMachine.TestCase


@settings(max_examples=150, deadline=None)
@given(
    regs=st.lists(st.tuples(small_patterns(), entries), max_size=12),
    topic=small_topics,
)
def test_index_agrees_with_pattern_matches(regs: list[tuple[str, str]], topic: str) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for p, e in regs:
        index.add(p, e)
    assert Counter(index.match(topic)) == _naive(regs, topic)
