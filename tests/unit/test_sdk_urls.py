"""SDK addresses: master URL -> endpoint URLs, and where a 307 leads."""

from __future__ import annotations

import pytest

from mc.client import McError
from mc.client.urls import base_url, default_master, endpoint, follow, http_url


@pytest.mark.parametrize(("base", "expected"), [
    ("http://127.0.0.1:7100", "ws://127.0.0.1:7100/v1/app?client=alice"),
    ("http://127.0.0.1:7100/", "ws://127.0.0.1:7100/v1/app?client=alice"),
    ("https://mc.example.com", "wss://mc.example.com/v1/app?client=alice"),
    ("ws://10.0.0.5:7101", "ws://10.0.0.5:7101/v1/app?client=alice"),
    ("wss://mc.example.com/prefix", "wss://mc.example.com/prefix/v1/app?client=alice"),
])
def test_endpoint_converts_scheme(base, expected):
    assert endpoint(base, "/v1/app", {"client": "alice"}) == expected


def test_endpoint_query_is_encoded_and_none_dropped():
    url = endpoint("http://h:1", "/v1/chat/room-1",
                   {"client": "a@b", "device": None, "tags": "x,y", "mode": "open"})
    assert url == "ws://h:1/v1/chat/room-1?client=a%40b&tags=x%2Cy&mode=open"


@pytest.mark.parametrize("bad", ["127.0.0.1:7100", "ftp://h", "http://", "", "localhost"])
def test_bad_base_urls_raise_mcerror(bad):
    with pytest.raises(McError) as info:
        base_url(bad)
    assert info.value.code == "bad_request"


def test_http_url():
    assert http_url("ws://h:1/") == "http://h:1"
    assert http_url("wss://h") == "https://h"
    assert http_url("http://h:7100") == "http://h:7100"


def test_default_master(monkeypatch):
    monkeypatch.delenv("MC_MASTER", raising=False)
    assert default_master() == "http://127.0.0.1:7100"
    monkeypatch.setenv("MC_MASTER", "http://10.1.1.1:9000")
    assert default_master() == "http://10.1.1.1:9000"


CURRENT = "ws://master:7100/v1/chat/room?client=alice&mode=open"


@pytest.mark.parametrize(("location", "expected"), [
    # the master's form: absolute, query included
    ("ws://w1:7101/v1/chat/room?client=alice&mode=open", "ws://w1:7101/v1/chat/room?client=alice&mode=open"),
    # an absolute location without a query keeps ours
    ("ws://w1:7101/v1/chat/room", "ws://w1:7101/v1/chat/room?client=alice&mode=open"),
    # http(s) locations become ws(s)
    ("http://w1:7101/v1/chat/room", "ws://w1:7101/v1/chat/room?client=alice&mode=open"),
    ("https://w1/v1/chat/room?x=1", "wss://w1/v1/chat/room?x=1"),
    # host-relative and path-relative locations resolve against the current URL
    ("/v1/chat/other", "ws://master:7100/v1/chat/other?client=alice&mode=open"),
    ("other?client=bob", "ws://master:7100/v1/chat/other?client=bob"),
    ("//w2:7102/v1/chat/room", "ws://w2:7102/v1/chat/room?client=alice&mode=open"),
])
def test_follow(location, expected):
    assert follow(CURRENT, location) == expected


def test_follow_refuses_other_schemes():
    with pytest.raises(McError):
        follow(CURRENT, "ftp://w1/v1/chat/room")
