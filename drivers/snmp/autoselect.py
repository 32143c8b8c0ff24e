"""``profile: auto``: which profile reads a device, chosen by its sysObjectID and by which MIBs answer.

Data-driven over every profile file (a new file joins without code changes):

1. **sysObjectID** — the profile whose ``match`` prefix is the longest prefix of
   the device's sysObjectID is read first; if it gives readings, it is the one.
2. **Probing** — otherwise (an unknown or generic sysObjectID: net-snmp's
   ``1.3.6.1.4.1.8072.3.2.10`` on a Huawei UPS5000 card or a Linux box with a
   UPS, an OEM card under another brand's enterprise …) one GETNEXT from each
   profile's ``probe`` subtrees (a few PDUs for all profiles) shows which MIBs
   answer. Candidates are ordered most specific first: profiles probing a
   vendor's own (enterprise) subtree before standard MIBs such as UPS-MIB or
   ENTITY-SENSOR-MIB, then by how many of their probes answered and how deep
   the answering subtree lies. Up to :data:`MAX_TRIES` are read in that order;
   the first that gives a reading wins.
3. **Fallback** — UPS-MIB (``ups-mib``), if it was not tried yet.

The choice is remembered until a poll fails (the card may have been swapped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomwatch.drivers.snmp.profile import FALLBACK, OID, Profile, format_oid, match_profile

__all__ = ["MAX_TRIES", "Choice", "choose", "probe_order"]

#: Profiles read in full while looking for one that gives readings (after the sysObjectID match).
MAX_TRIES = 4


@dataclass(frozen=True, slots=True)
class Choice:
    """The profile chosen for a device, why, and the readings of the read that chose it."""

    profile: Profile
    how: str
    readings: list[Any]
    tried: tuple[str, ...]


def _answers(prefix: OID, answer: tuple[OID, Any] | None) -> bool:
    """A GETNEXT from ``prefix`` landed inside its subtree on a real value."""
    if answer is None:
        return False
    oid, value = answer
    return oid[:len(prefix)] == prefix and len(oid) > len(prefix) and value is not None


def probe_order(profiles: Mapping[str, Profile], answers: Mapping[OID, tuple[OID, Any] | None],
                skip: Sequence[str] = ()) -> list[Profile]:
    """Profiles whose probes answered, most specific first (see the module docstring)."""
    ranked = []
    for prof in profiles.values():
        if prof.name in skip or not prof.probe:
            continue
        hits = [p for p in prof.probe if _answers(p, answers.get(p))]
        if hits:
            ranked.append(((not prof.vendor_specific, -len(hits), -max(len(p) for p in hits), prof.name), prof))
    return [prof for _, prof in sorted(ranked, key=lambda item: item[0])]


async def choose(profiles: Mapping[str, Profile], sys_object_id: OID | None,
                 read: Callable[[Profile], Awaitable[list[Any]]],
                 step: Callable[[Sequence[OID]], Awaitable[Mapping[OID, tuple[OID, Any] | None]]]) -> Choice | None:
    """The profile for a device of ``sys_object_id``: ``read(profile)`` reads it (readings, empty when none),
    ``step(oids)`` is one GETNEXT from each OID. None when no profile gives anything."""
    tried: list[str] = []
    matched = match_profile(sys_object_id, profiles)
    shown = format_oid(sys_object_id) if sys_object_id else "(none)"
    if matched.name != FALLBACK:
        tried.append(matched.name)
        readings = await read(matched)
        if readings:
            return Choice(matched, f"sysObjectID {shown} matches", readings, tuple(tried))
    prefixes = list(dict.fromkeys(p for prof in profiles.values() if prof.name not in tried for p in prof.probe))
    try:
        answers = await step(prefixes) if prefixes else {}
    except Exception:  # an agent that will not GETNEXT: no probing, the fallback still gets its chance
        answers = {}
    for prof in probe_order(profiles, answers, skip=tried)[:MAX_TRIES]:
        tried.append(prof.name)
        readings = await read(prof)
        if readings:
            return Choice(prof, f"sysObjectID {shown}; its MIB answers", readings, tuple(tried))
    if FALLBACK not in tried:
        tried.append(FALLBACK)
        readings = await read(profiles[FALLBACK])
        if readings:
            return Choice(profiles[FALLBACK], f"sysObjectID {shown}; standard UPS-MIB", readings, tuple(tried))
    return None
