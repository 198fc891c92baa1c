"""Counts by name, added up: the one summing rule for counters gathered from several places."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def summed(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Each name's count over all of ``maps`` (a name missing from one counts 0 there)."""
    out: dict[str, int] = {}
    for m in maps:
        for k, n in m.items():
            out[k] = out.get(k, 0) + n
    return out
