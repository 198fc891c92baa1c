"""mc.master.h11_heads.validated: h11's header check, once per distinct list, the same result."""

from __future__ import annotations

import h11
import pytest
from h11._headers import normalize_and_validate

from mc.master import h11_heads
from mc.master.h11_heads import VALIDATED_HEADERS, validated

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15"), (b"Server", b"hypercorn-h11")]


def test_the_same_list_gets_the_same_checked_headers() -> None:
    first = validated(list(HEADERS))
    assert first is validated(list(HEADERS))
    assert list(first.raw_items()) == list(normalize_and_validate(HEADERS).raw_items())
    assert list(first) == [(b"content-type", b"application/json"), (b"content-length", b"15"),
                           (b"server", b"hypercorn-h11")]


@pytest.mark.parametrize("bad", [
    [(b"x-injected", b"a\r\nset-cookie: b")],
    [(b"bad name", b"v")],
    [(b"content-length", b"1"), (b"content-length", b"2")],
])
def test_a_bad_list_fails_every_time(bad: list[tuple[bytes, bytes]]) -> None:
    for _ in range(2):
        with pytest.raises(h11.LocalProtocolError):
            validated(bad)


def test_the_table_is_bounded() -> None:
    for n in range(3 * VALIDATED_HEADERS):
        validated([(b"content-length", b"%d" % n)])
        assert len(h11_heads._validated_cache) <= VALIDATED_HEADERS
