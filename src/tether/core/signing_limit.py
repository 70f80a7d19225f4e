"""The CA's signing rate limit (CSRMaxPerSecond), shared fairly and with room for renewals.

    limit = FairLimiter(rate=50, clock=time.monotonic)
    limit.take("accessor-a", renewal=False)   # 0.0: sign now; > 0: refuse, retry after that long

One token bucket of `rate` per second (a burst of one second's worth) is the ceiling, as
before. Two rules share it:

  1. **Renewals go first.** New identities may not take the last RENEWAL_RESERVE of the
     bucket (in whole tokens, so a bucket of one is not reserved away); renewals of leaves already issued may. A flood of new identities can slow
     new services down, but never makes a running service's leaf expire.
  2. **Fair share per requester** (a token's accessor). While the bucket is less than
     half full, a requester may take only its share: a bucket of its own refilled at
     rate / n, where n is the number of requesters seen in the last ACTIVE_WINDOW. Above
     half, anyone may take: a lone busy requester is not throttled for nothing.

Pure: the clock is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: Fraction of the bucket only renewals may use.
RENEWAL_RESERVE = 0.2
#: Requesters seen this recently count towards the fair share.
ACTIVE_WINDOW = 10.0


@dataclass
class _Share:
    tokens: float
    stamp: float
    seen: float


class FairLimiter:
    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._shares: dict[str, _Share] = {}
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = self.clock()

    def take(self, requester: str, *, renewal: bool) -> float:
        """0.0 when the request may be signed now, else the seconds to wait. rate 0: unlimited."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        active = self._active(now, requester)
        share = self._shares[requester]
        share_rate = self.rate / active
        share.tokens = min(self.capacity / active, share.tokens + (now - share.stamp) * share_rate)
        share.stamp = now
        floor = 0.0 if renewal else float(int(self.capacity * RENEWAL_RESERVE))  # whole tokens: 0 for tiny rates
        if self._tokens - 1.0 < floor:
            return (floor + 1.0 - self._tokens) / self.rate
        if self._tokens < self.capacity / 2 and share.tokens < 1.0:
            return (1.0 - share.tokens) / share_rate
        self._tokens -= 1.0
        share.tokens = max(0.0, share.tokens - 1.0)
        return 0.0

    def _active(self, now: float, requester: str) -> int:
        share = self._shares.get(requester)
        if share is None:
            share = self._shares[requester] = _Share(tokens=self.capacity, stamp=now, seen=now)
        share.seen = now
        if len(self._shares) > 64:  # forget requesters gone quiet (bounded memory)
            for name in [n for n, s in self._shares.items() if now - s.seen > ACTIVE_WINDOW]:
                del self._shares[name]
        return max(1, sum(1 for s in self._shares.values() if now - s.seen <= ACTIVE_WINDOW))
