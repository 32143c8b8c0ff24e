"""Known agents: token check, seq dedup, last push and up/down state."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from roomwatch.collector.config import CollectorConfig, hash_token
from roomwatch.collector.seqs import SeqTracker

__all__ = ["AgentRegistry", "AgentState", "hash_token"]


@dataclass(slots=True)
class AgentState:
    id: str
    token_hash: str
    timeout: float
    standby: bool = False  # failover collector for this agent: its silence here is not AgentDown
    role: str = "agent"  # "collector": another collector's heartbeat (CollectorDown instead of AgentDown)
    seqs: SeqTracker = field(default_factory=SeqTracker)
    last_push: float | None = None  # Unix seconds of the last accepted push
    last_seq: int | None = None
    address: str = ""
    pushes: int = 0
    samples: int = 0
    events: int = 0
    clock_skew_ms: int = 0
    future_stamps: int = 0  # samples and events stamped too far ahead, set to the receive time
    future_logged: float = 0.0  # Unix seconds of the last log line about them
    past_stamps: int = 0  # stamped before 2000 even after skew correction, set to the receive time
    past_logged: float = 0.0
    site: str | None = None  # the agents[] binding: the only site label it may write (None: any)
    rooms: frozenset[str] | None = None  # the room labels it may write (None: any)
    max_series: int = 10_000  # series it may hold at once

    def up(self, now: float) -> bool:
        return self.last_push is not None and now - self.last_push <= self.timeout

    def down(self, now: float) -> bool:
        """Silent here although this collector is its home (a standby agent is never down here)."""
        return not self.standby and not self.up(now)


class AgentRegistry:
    """The agents listed in the collector config."""

    def __init__(self, config: CollectorConfig):
        self.agents: dict[str, AgentState] = {}
        self._by_hash: dict[str, AgentState] = {}
        self.reload(config)

    def reload(self, config: CollectorConfig) -> None:
        old = self.agents
        self.agents, self._by_hash = {}, {}
        for entry in config.agents:
            digest = entry.digest()
            state = old.get(entry.id) or AgentState(entry.id, digest, entry.timeout or config.agent_timeout)
            state.token_hash, state.timeout = digest, entry.timeout or config.agent_timeout
            state.standby = entry.standby
            state.role = entry.role
            state.site, state.rooms = entry.site, entry.bound_rooms()
            state.max_series = entry.max_series or config.limits.series_per_agent
            self.agents[entry.id] = state
            self._by_hash[digest] = state

    def authenticate(self, token: str) -> AgentState | None:
        """The agent owning ``token``, or None. Compared as hashes in constant time."""
        digest = hash_token(token)
        found = self._by_hash.get(digest)
        if found is not None and hmac.compare_digest(found.token_hash, digest):
            return found
        return None

    def down_agents(self, now: float | None = None) -> list[AgentState]:
        now = time.time() if now is None else now
        return [a for a in self.agents.values() if a.down(now)]
