"""A local inventory of services and releases, so the agent works offline."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

RELEASES: dict[str, dict[str, list[str]]] = {
    "api": {
        "1.4.1": ["Fix pagination of /orders"],
        "1.4.2": ["Rate-limit login attempts", "Upgrade TLS library"],
        "1.5.0": ["New refunds endpoint", "Drop the v1 API"],
    },
    "web": {
        "2.0.0": ["Redesigned checkout"],
        "2.1.0": ["Dark mode", "Faster search"],
    },
    "worker": {"0.9.0": ["Retry failed webhooks"], "0.9.1": ["Fix memory leak"]},
}

HISTORY = 10
"""Earlier versions kept per service and environment: how many rollbacks in a row reach
back. Older ones are forgotten, as a real deploy service keeps its last few releases."""

KEYS = 1000
"""Idempotency keys remembered, the latest ones: a retry of any of the last this many
deploys and rollbacks is recognised. (A retry is a call cut by a crash, re-run by the next
worker within seconds.)"""


@dataclass
class Inventory:
    """What runs where; deploys are recorded with their idempotency keys.

    Bounded, so a long run keeps a constant size: the last ``HISTORY`` versions per
    service and environment, and the last ``KEYS`` idempotency keys.
    """

    running: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "api": {"production": "1.4.1", "staging": "1.4.2"},
            "web": {"production": "2.0.0", "staging": "2.1.0"},
            "worker": {"production": "0.9.0", "staging": "0.9.1"},
        }
    )
    history: dict[str, deque[str]] = field(default_factory=dict)
    """Per ``service/environment``: the versions it ran before, the latest last."""
    applied: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """The idempotency keys of the deploys and rollbacks done, the oldest first."""

    def deploy(self, service: str, version: str, environment: str, key: str) -> str:
        if service not in self.running:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(self.running)}")
        if version not in RELEASES[service]:
            raise ValueError(f"{service} has no release {version}")
        if key in self.applied:  # the same call again: already done
            return f"{service} {version} already deployed to {environment}"
        previous = self.running[service][environment]
        past = self.history.setdefault(f"{service}/{environment}", deque(maxlen=HISTORY))
        past.append(previous)
        self.running[service][environment] = version
        self._done(key)
        return f"{service} {previous} -> {version} on {environment}"

    def rollback(self, service: str, environment: str, key: str) -> str:
        past = self.history.get(f"{service}/{environment}")
        if key in self.applied:
            return f"{service} already rolled back on {environment}"
        if not past:
            raise ValueError(f"{service} has no earlier version on {environment}")
        current, self.running[service][environment] = self.running[service][environment], past.pop()
        self._done(key)
        return f"{service} {current} -> {self.running[service][environment]} on {environment}"

    def _done(self, key: str) -> None:
        """Remember ``key`` as done, forgetting the oldest beyond ``KEYS``."""
        self.applied[key] = None
        if len(self.applied) > KEYS:
            self.applied.popitem(last=False)


INVENTORY = Inventory()
