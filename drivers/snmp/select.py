"""``profile: auto``: choose a profile by sysObjectID prefix, else by which MIB the device answers.

Vendor cards announce themselves by sysObjectID (the longest matching ``match`` prefix wins). Many
environment probes and OEM cards do not — a net-snmp sysObjectID, or a vendor arc no profile lists —
so when no prefix matches, one GETNEXT asks every profile's ``probe`` objects at once and the first
profile, in this order, whose probe answers is used: vendor profiles (file order), then the standard
UPS-MIB, then the generic ENTITY-SENSOR-MIB (which switches and servers also carry).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from drivers.snmp.profile import FALLBACK, OID, Profile

__all__ = ["GENERIC", "choose_by_probe", "probe_objects"]

#: Profiles asked last: they describe standard MIBs that many devices carry besides their own.
GENERIC = (FALLBACK, "entity-sensor")


def _ordered(profiles: Mapping[str, Profile]) -> list[Profile]:
    vendor = [p for name, p in profiles.items() if name not in GENERIC]
    return vendor + [profiles[name] for name in GENERIC if name in profiles]


def probe_objects(profiles: Mapping[str, Profile]) -> list[OID]:
    """Every probe object of every profile, each once, in the order they are tried."""
    return list(dict.fromkeys(oid for p in _ordered(profiles) for oid in p.probe))


def choose_by_probe(profiles: Mapping[str, Profile], answered: Iterable[OID]) -> Profile | None:
    """The first profile (vendor, then UPS-MIB, then ENTITY-SENSOR) one of whose probes answered."""
    got = set(answered)
    return next((p for p in _ordered(profiles) if any(o in got for o in p.probe)), None)
