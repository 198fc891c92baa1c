"""Pure parts of issue 11: JSON/text log lines, the log flood limiter, rates from counters, --help."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mc import logs
from mc.cli import build_parser
from mc.master.observe import Rates
from mc.protocol.control import TO_MASTER, Heartbeat, Metrics, parse_batch


@pytest.fixture
def captured():
    stream = io.StringIO()
    logs.setup("info", "json", "w7")
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    yield stream
    logs.setup("warning", "text", "mc")


def test_json_lines_carry_the_fields(captured):
    log = logging.getLogger("mc.worker")
    log.info("closing with %d", 4009, extra={"code": 4009, "client": "alice", "device": "d", "conn": "7f",
                                             "session": None, "trace": "t1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["msg"] == "closing with 4009" and first["level"] == "info"
    assert first["process"] == "w7" and first["ts"].endswith("Z")
    assert {k: first[k] for k in ("code", "client", "device", "conn", "trace")} == {
        "code": 4009, "client": "alice", "device": "d", "conn": "7f", "trace": "t1"}
    assert "session" not in first  # None fields are left out
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_text_lines_name_the_process():
    record = logging.LogRecord("mc.master", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.code = 4000
    logs.set_process("master")
    try:
        line = logs.TextFormatter().format(record)
    finally:
        logs.set_process("mc")
    assert " INFO master mc.master: hello x [code=4000]" in line


def test_library_noise_is_off_below_debug():
    logs.setup("info", "text")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("hypercorn.access").isEnabledFor(logging.INFO)
    logs.setup("debug", "text")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    logs.setup("warning", "text")


def test_the_limiter_bounds_a_flood_and_counts_what_it_dropped(captured, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    limited = logs.Limited(logging.getLogger("mc.worker"), rate=1.0, burst=5.0)
    logged = sum(limited.log(logging.INFO, "refused-401", "refused %d", i) for i in range(1000))
    assert logged == 5
    assert limited.suppressed() == {"refused-401": 995}
    assert limited.log(logging.INFO, "close-4000", "another kind has its own bucket")
    now[0] += limited.SUMMARY_EVERY  # time passes: one token back, and the summary is due
    assert limited.log(logging.INFO, "refused-401", "refused again")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    summary = [line for line in lines if line.get("suppressed")]
    assert summary and summary[0]["suppressed"] == 995 and summary[0]["step"] == "refused-401"
    assert len(lines) == 5 + 1 + 1 + 1


def metrics(i: int, o: int) -> Metrics:
    return Metrics(messages_in=i, messages_out=o, msgs_in_rate=123.0)


def test_rates_come_from_counter_deltas_over_the_window():
    rates = Rates(window=3.0)
    assert rates.of("w1") == (0.0, 0.0)
    rates.observe("w1", metrics(0, 0), 10.0)
    assert rates.of("w1", metrics(0, 0)) == (123.0, 0.0)  # one sample: the worker's own figure
    for k in range(1, 11):  # 1000 in, 3000 out per second, heartbeats every 0.5 s
        rates.observe("w1", metrics(500 * k, 1500 * k), 10.0 + 0.5 * k)
    r_in, r_out = rates.of("w1")
    assert r_in == pytest.approx(1000) and r_out == pytest.approx(3000)
    rates.observe("w1", metrics(10, 10), 16.0)  # restarted under the same id
    rates.observe("w1", metrics(510, 10), 16.5)
    assert rates.of("w1")[0] == pytest.approx(1000)
    rates.forget(set())
    assert rates.of("w1") == (0.0, 0.0)


def test_heartbeat_counters_validate():
    ok = Heartbeat(Metrics(counters={"closed.4009": 2, "received.publish": 10})).to_wire()
    messages, errors = parse_batch([ok], TO_MASTER)
    assert not errors and messages[0].metrics.counters["closed.4009"] == 2
    for bad in ({"closed.4009": -1}, {"": 1}, {"x" * 65: 1}, {"a": 1.5}, [1]):
        _, errors = parse_batch([{**ok, "metrics": {**ok["metrics"], "counters": bad}}], TO_MASTER)
        assert errors, bad


@pytest.mark.parametrize("command", ["up", "master", "worker", "publish", "consume", "status", "notify",
                                     "chat", "token", "config check", "bench fanout", "bench relay",
                                     "bench connections", "bench master"])
def test_every_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command.split(), "--help"])
    out = capsys.readouterr().out
    assert "default" in out, out
