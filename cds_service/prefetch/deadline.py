"""The one deadline of a hook call's FHIR reads, and the floors under it.

A call's ``Deadline`` is started once, when the engine takes the call (CDS_FETCH_DEADLINE_SECONDS from then),
and passed down to prefetch completion and to every ``FhirGateway.fetch_many`` of that call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

# The floors (seconds). Each one says when a read is still worth starting, or how long one step may take.
KEY_FETCH_FLOOR = 0.05
"""The call's own prefetch keys are always given at least this long, even when validating the request used up
the deadline: a required key then gets its chance (and a clear timeout reason) instead of failing unsent."""
EXTRA_FETCH_FLOOR = 0.05
"""Extra reads that only enrich the record (Medications that orders reference) are not started with this
little or less left: they could not finish, and the call would only wait for them."""
REQUEST_FLOOR = 0.01
"""A GET (or the next page of a search) is not sent with this little or less left: no server answers that fast."""
CONNECT_TIMEOUT_CAP = 1.0
"""Connecting to the FHIR server takes at most this long, however much of the deadline is left: a server that
does not accept a connection within a second is treated as unreachable rather than waited for."""


@dataclass(frozen=True)
class Deadline:
    """A point in ``time.monotonic()`` time by which a call's reads must be done."""

    at: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()

    def at_least(self, seconds: float) -> Deadline:
        """This deadline, or ``seconds`` from now when that is later (a floor for a read that must be tried)."""
        return Deadline(max(self.at, time.monotonic() + seconds))

    def leaves(self, seconds: float) -> bool:
        """Whether more than ``seconds`` are left."""
        return self.remaining() > seconds
