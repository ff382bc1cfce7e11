"""``api.server.RateLimitFilter``: client-triggered log lines are let through in bursts per message
(keyed on the first line, where asyncio's messages are stable) and the next line after a quiet
window says how many were dropped."""

from __future__ import annotations

import logging

from api.server import RateLimitFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


def test_bursts_per_message_then_a_count_of_what_was_dropped() -> None:
    clock = Clock()
    limit = RateLimitFilter(burst=3, window=60.0, clock=clock)
    accept = "socket.accept() out of system resource\nsocket: <fd=%d>"
    passed = [limit.filter(record(accept, n)) for n in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert limit.filter(record("another message"))  # counted separately
    clock.now = 61.0
    after = record(accept, 7)
    assert limit.filter(after)
    assert after.getMessage().endswith("(97 similar messages suppressed in the last 60 s)")
    assert after.getMessage().startswith("socket.accept() out of system resource")


def test_per_call_details_after_the_first_line_do_not_make_messages_distinct() -> None:
    limit = RateLimitFilter(burst=2, window=60.0, clock=Clock())
    messages = [
        f"Exception in callback BaseSelectorEventLoop._start_serving(...)\nhandle: when={n}"
        for n in range(50)
    ]
    assert sum(limit.filter(record(m)) for m in messages) == 2


def test_loggers_are_counted_separately() -> None:
    limit = RateLimitFilter(burst=1, window=60.0, clock=Clock())
    assert limit.filter(record("Invalid HTTP request received.", name="uvicorn.error"))
    assert not limit.filter(record("Invalid HTTP request received.", name="uvicorn.error"))
    assert limit.filter(record("Invalid HTTP request received.", name="api.server"))
