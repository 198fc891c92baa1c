"""Topic patterns and the subscription index.

Patterns follow NATS: ``*`` matches exactly one segment, ``>`` (last only)
matches one or more trailing segments. The index is a segment trie, so a
lookup visits only branches that can match instead of scanning every
subscription, and it memoises results per topic (bounded; cleared whenever
the subscriptions change, which is rare next to publishing).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

MATCH_CACHE_SIZE = 4096


def pattern_matches(pattern: str, topic: str) -> bool:
    """The reference matcher: does ``pattern`` match ``topic``?"""
    pat = pattern.split(".")
    seg = topic.split(".")
    for i, p in enumerate(pat):
        if p == ">":
            return len(seg) > i
        if i >= len(seg) or (p != "*" and p != seg[i]):
            return False
    return len(pat) == len(seg)


class _Node:
    __slots__ = ("children", "star", "here", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.here: list = []  # entries whose pattern ends at this node
        self.rest: list = []  # entries whose pattern ends with '>' here

    def empty(self) -> bool:
        return not (self.children or self.star or self.here or self.rest)


class SubscriptionIndex(Generic[T]):
    """Pattern -> entries; ``match(topic)`` gives the entries of every matching pattern.

    An entry may be added under several patterns; ``match`` then returns it
    once per matching pattern (the caller decides what a duplicate means).
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, list[T]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str, entry: T) -> None:
        node = self._root
        segments = pattern.split(".")
        for seg in segments[:-1]:
            node = self._step(node, seg)
        last = segments[-1]
        if last == ">":
            node.rest.append(entry)
        else:
            self._step(node, last).here.append(entry)
        self._size += 1
        self._cache.clear()

    def remove(self, pattern: str, entry: T) -> bool:
        """Remove one registration of ``entry`` under ``pattern``; False if absent."""
        path: list[tuple[_Node, str]] = []
        node: _Node | None = self._root
        segments = pattern.split(".")
        for seg in segments[:-1]:
            path.append((node, seg))  # type: ignore[arg-type]
            node = node.star if seg == "*" else node.children.get(seg)  # type: ignore[union-attr]
            if node is None:
                return False
        last = segments[-1]
        if last == ">":
            bucket = node.rest  # type: ignore[union-attr]
        else:
            path.append((node, last))  # type: ignore[arg-type]
            node = node.star if last == "*" else node.children.get(last)  # type: ignore[union-attr]
            if node is None:
                return False
            bucket = node.here
        try:
            bucket.remove(entry)
        except ValueError:
            return False
        self._size -= 1
        self._cache.clear()
        self._prune(path, node)  # type: ignore[arg-type]
        return True

    def match(self, topic: str) -> list[T]:
        """Entries of all patterns matching ``topic`` (do not mutate the result)."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        segs = topic.split(".")
        n = len(segs)
        out: list[T] = []
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                out.extend(node.here)
                continue
            if node.rest:
                out.extend(node.rest)
            child = node.children.get(segs[i])
            if child is not None:
                stack.append((child, i + 1))
            if node.star is not None:
                stack.append((node.star, i + 1))
        if len(self._cache) >= MATCH_CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = out
        return out

    @staticmethod
    def _step(node: _Node, seg: str) -> _Node:
        if seg == "*":
            if node.star is None:
                node.star = _Node()
            return node.star
        child = node.children.get(seg)
        if child is None:
            child = node.children[seg] = _Node()
        return child

    @staticmethod
    def _prune(path: list[tuple[_Node, str]], node: _Node) -> None:
        """Drop now-empty nodes so memory follows the live subscriptions."""
        while path and node.empty():
            parent, seg = path.pop()
            if seg == "*":
                parent.star = None
            else:
                del parent.children[seg]
            node = parent
