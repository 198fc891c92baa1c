"""McError: close codes, refused handshakes and error frames map to one exception."""

from __future__ import annotations

import pytest

from mc.client import McError

STOP = [1000, 1002, 1007, 1009, 4000, 4001, 4009]
RECONNECT = [1001, 1006, 1011, 4008, 4029, 4503, None]


@pytest.mark.parametrize("code", STOP)
def test_final_close_codes_are_not_temporary(code):
    exc = McError.from_close(code, "bye")
    assert not exc.temporary
    assert exc.close_code == code
    assert "bye" in exc.reason


@pytest.mark.parametrize("code", RECONNECT)
def test_other_close_codes_reconnect(code):
    assert McError.from_close(code, None).temporary


def test_close_code_error_codes():
    assert McError.from_close(4001, "").code == "unauthorized"
    assert McError.from_close(1009, "").code == "too_large"
    assert McError.from_close(4029, "").code == "rate_limited"
    assert McError.from_close(4503, "").code == "unavailable"


def test_rejection_uses_the_json_body():
    exc = McError.from_status(404, b'{"error": "not_found", "reason": "no chat session"}')
    assert (exc.code, exc.status, exc.temporary) == ("not_found", 404, False)
    assert "no chat session" in exc.reason


def test_rejection_without_body_maps_the_status():
    assert McError.from_status(401, None).code == "unauthorized"
    assert McError.from_status(409, b"not json").code == "forbidden"
    busy = McError.from_status(503, b"", [(b"Retry-After", b"2")])
    assert (busy.code, busy.temporary, busy.retry_after) == ("unavailable", True, 2.0)


def test_error_frames():
    assert McError.from_frame("bad_request", "nope").temporary is False
    assert McError.from_frame("rate_limited", "slow down").temporary is True
    assert str(McError("not_found", "x")) == "not_found: x"
