"""Log helpers shared by both bindings: a throttle for lines that a client could otherwise repeat
at will (malformed requests, dropped streams, hostile HTTP)."""

import time
from collections.abc import Callable


class LogThrottle:
    """At most one line per ``interval_s``; the lines held back in between are counted."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.held_back = 0
        self._next_at = float("-inf")

    def admit(self) -> int | None:
        """None: stay silent; else a line may be written, and this many were held back since the last."""
        now = self.clock()
        if now < self._next_at:
            self.held_back += 1
            return None
        held_back, self.held_back = self.held_back, 0
        self._next_at = now + self.interval_s
        return held_back
