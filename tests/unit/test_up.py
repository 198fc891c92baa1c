"""``mc up``'s pure parts: how an exit is reported and the restart schedule."""

from __future__ import annotations

from mc.commands.up import RESTART_FIRST, RESTART_MAX, RESTART_STABLE, exit_status, next_delay


def test_exit_status_names_the_signal():
    assert exit_status(-9) == "-9 (SIGKILL)"
    assert exit_status(-15) == "-15 (SIGTERM)"
    assert exit_status(1) == "1" and exit_status(0) == "0"
    assert exit_status(-200) == "-200 (signal 200)"


def test_restart_delay_doubles_to_the_cap_and_resets_once_stable():
    delays = [RESTART_FIRST]
    for _ in range(7):
        delays.append(next_delay(delays[-1], lived=0.5))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert RESTART_MAX == 30.0
    assert next_delay(30.0, lived=RESTART_STABLE) == RESTART_FIRST
    assert next_delay(4.0, lived=RESTART_STABLE - 0.1) == 8.0
