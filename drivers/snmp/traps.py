"""What an SNMP trap means: a table from notification OIDs to a name and, where the MIB says so, a state.

A trap from a device the agent polls always triggers an immediate poll of that device (so any
trap, mapped here or not, brings its current values within a second). The table below adds
what the notification itself states — on battery, low battery, mains back, a leak, smoke — so
that state reaches the collector as an event at once, before the poll has even answered.

Sources (each MIB as published by its vendor; the LibreNMS ``mibs/`` collection has them all):

* **UPS-MIB**, RFC 1628 §4 (``upsTraps`` = 1.3.6.1.2.1.33.2): upsTrapOnBattery {upsTraps 1},
  upsTrapTestCompleted {2}, upsTrapAlarmEntryAdded {3}, upsTrapAlarmEntryRemoved {4}; the alarm
  traps carry ``upsAlarmDescr`` (1.3.6.1.2.1.33.1.6.2.1.2), one of ``upsWellKnownAlarms``
  (1.3.6.1.2.1.33.1.6.3): upsAlarmBatteryBad 1, upsAlarmOnBattery 2, upsAlarmLowBattery 3 …
* **APC PowerNet-MIB** (SMIv1 TRAP-TYPE, ENTERPRISE apc = 1.3.6.1.4.1.318): communicationLost 1,
  upsOverload 2, upsDiagnosticsFailed 3, upsDischarged 4, upsOnBattery 5, smartBoostOn 6,
  lowBattery 7, communicationEstablished 8, powerRestored 9, upsDiagnosticsPassed 10,
  returnFromLowBattery 11 (the same numbers as apcupsd's ``src/drivers/snmp/traps.h``).
* **Eaton XUPS-MIB** (1.3.6.1.4.1.534.1): the same notification numbers in three trees —
  xupsTrapBasic (534.1.0.0.0.N, as v1 enterprise ``xupsTrapBasic``), xupsTrapDefined
  (534.1.11.4.1.0.N) and xupsTrapPortN (534.1.11.4.2.0.N): OnBattery 3, LowBattery 4,
  UtilityPowerRestored 5, ReturnFromLowBattery 6, AlarmEntryAdded 21 / Removed 22 (with
  ``xupsAlarmDescr`` 534.1.7.2.1.2 pointing at xupsOnBattery 534.1.7.3, xupsLowBattery 534.1.7.4 …).
* **MGE MG-SNMP-UPS-MIB** (1.3.6.1.4.1.705.1.11.0.N): upsmgAtLowBattery 5, upsmgFromLowBattery 6,
  upsmgOnBattery 11, upsmgReturnFromBattery 12.
* **XPPC-MIB** (Megatec/PPC NetAgent, 1.3.6.1.4.1.935.0.N, the card inside many Chinese UPS):
  upsOnBattery 5, lowBattery 7, powerRestored 9, returnFromLowBattery 11, envSmokeAbnormal 20,
  envWaterAbnormal 21, envWaterNormal 24.

Environment monitors (AKCP, NetBotz, AVTECH, HW group, Geist …) send threshold and contact
traps whose meaning depends on how each probe was set up: they are not in the table, and get
the immediate poll, whose readings (and the ``contacts:`` a device entry names) say the rest.

SNMPv1 traps arrive translated to SNMPv2 form (RFC 3584 §3.1: enterprise.0.specific-trap), so a
UPS-MIB card sending v1 gives 1.3.6.1.2.1.33.2.0.1 for upsTrapOnBattery: :func:`classify`
accepts both spellings of every entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.drivers.snmp.profile import OID, format_oid, parse_oid

__all__ = ["SNMP_TRAP_OID", "TRAPS", "TrapMeaning", "classify"]

#: snmpTrapOID.0 (SNMPv2-MIB): the varbind naming the notification.
SNMP_TRAP_OID: OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)


@dataclass(frozen=True, slots=True)
class TrapMeaning:
    """A notification's name and, when it states one, the state it reports (a STATE_EVENTS metric and 0/1)."""

    name: str
    metric: str | None = None
    value: float | None = None


_ON, _LOW, _LEAK, _SMOKE = v.UPS_ON_BATTERY, v.UPS_BATTERY_LOW, v.WATER_LEAK, v.SMOKE


def _family(prefix: str, entries: Mapping[int, tuple[str, str | None, float | None]]) -> dict[OID, TrapMeaning]:
    base = parse_oid(prefix)
    return {base + (n,): TrapMeaning(name, metric, value) for n, (name, metric, value) in entries.items()}


_APC_LIKE = {  # PowerNet-MIB; XPPC-MIB copies the first numbers
    1: ("communicationLost", None, None), 2: ("upsOverload", None, None), 3: ("upsDiagnosticsFailed", None, None),
    4: ("upsDischarged", None, None), 5: ("upsOnBattery", _ON, 1.0), 6: ("smartBoostOn", None, None),
    7: ("lowBattery", _LOW, 1.0), 8: ("communicationEstablished", None, None), 9: ("powerRestored", _ON, 0.0),
    10: ("upsDiagnosticsPassed", None, None), 11: ("returnFromLowBattery", _LOW, 0.0),
}
_XUPS = {3: ("OnBattery", _ON, 1.0), 4: ("LowBattery", _LOW, 1.0), 5: ("UtilityPowerRestored", _ON, 0.0),
         6: ("ReturnFromLowBattery", _LOW, 0.0), 9: ("BatteryDischarged", None, None), 21: ("AlarmEntryAdded", None, None),
         22: ("AlarmEntryRemoved", None, None), 30: ("ContactActiveNotice", None, None),
         31: ("ContactInactiveNotice", None, None)}

#: Notification OID (SNMPv2 form) → meaning.
TRAPS: dict[OID, TrapMeaning] = {
    **_family("1.3.6.1.2.1.33.2", {1: ("UPS-MIB upsTrapOnBattery", _ON, 1.0), 2: ("UPS-MIB upsTrapTestCompleted", None, None),
                                   3: ("UPS-MIB upsTrapAlarmEntryAdded", None, None),
                                   4: ("UPS-MIB upsTrapAlarmEntryRemoved", None, None)}),
    **_family("1.3.6.1.4.1.318.0", {n: (f"PowerNet-MIB {name}", m, val) for n, (name, m, val) in _APC_LIKE.items()}),
    **_family("1.3.6.1.4.1.935.0", {**{n: (f"XPPC-MIB {name}", m, val) for n, (name, m, val) in _APC_LIKE.items()},
                                    20: ("XPPC-MIB envSmokeAbnormal", _SMOKE, 1.0),
                                    21: ("XPPC-MIB envWaterAbnormal", _LEAK, 1.0),
                                    24: ("XPPC-MIB envWaterNormal", _LEAK, 0.0)}),
    **_family("1.3.6.1.4.1.534.1.0.0.0", {n: (f"XUPS-MIB xupstb{name}", m, val) for n, (name, m, val) in _XUPS.items()}),
    **_family("1.3.6.1.4.1.534.1.11.4.1.0", {n: (f"XUPS-MIB xupstd{name}", m, val) for n, (name, m, val) in _XUPS.items()}),
    **_family("1.3.6.1.4.1.534.1.11.4.2.0", {n: (f"XUPS-MIB xupstp{name}", m, val) for n, (name, m, val) in _XUPS.items()}),
    **_family("1.3.6.1.4.1.705.1.11.0", {5: ("MG-SNMP-UPS-MIB upsmgAtLowBattery", _LOW, 1.0),
                                         6: ("MG-SNMP-UPS-MIB upsmgFromLowBattery", _LOW, 0.0),
                                         11: ("MG-SNMP-UPS-MIB upsmgOnBattery", _ON, 1.0),
                                         12: ("MG-SNMP-UPS-MIB upsmgReturnFromBattery", _ON, 0.0)}),
}

#: Alarm-table traps: (column of the alarm's description OID, {well-known alarm OID: (name, metric)}).
#: An "entry added" trap sets the state to 1, "entry removed" back to 0.
_UPS_ALARM_DESCR = parse_oid("1.3.6.1.2.1.33.1.6.2.1.2")
_XUPS_ALARM_DESCR = parse_oid("1.3.6.1.4.1.534.1.7.2.1.2")
ALARMS: dict[OID, tuple[str, str]] = {
    parse_oid("1.3.6.1.2.1.33.1.6.3.2"): ("upsAlarmOnBattery", _ON),
    parse_oid("1.3.6.1.2.1.33.1.6.3.3"): ("upsAlarmLowBattery", _LOW),
    parse_oid("1.3.6.1.4.1.534.1.7.3"): ("xupsOnBattery", _ON),
    parse_oid("1.3.6.1.4.1.534.1.7.4"): ("xupsLowBattery", _LOW),
}
_ADDED = {"UPS-MIB upsTrapAlarmEntryAdded", "XUPS-MIB xupstbAlarmEntryAdded", "XUPS-MIB xupstdAlarmEntryAdded",
          "XUPS-MIB xupstpAlarmEntryAdded"}
_REMOVED = {n.replace("Added", "Removed") for n in _ADDED}


def _lookup(oid: OID) -> TrapMeaning | None:
    found = TRAPS.get(oid)
    if found is None and len(oid) > 2 and oid[-2] == 0:
        found = TRAPS.get(oid[:-2] + oid[-1:])  # v1 form of an SMIv2 {upsTraps 1}: upsTraps.0.1
    return found


def classify(trap_oid: OID | None, var_binds: Sequence[tuple[OID, Any]]) -> TrapMeaning:
    """The meaning of one notification (its ``snmpTrapOID.0`` and the other varbinds, values as plain Python)."""
    if trap_oid is None:
        return TrapMeaning("(no snmpTrapOID)")
    meaning = _lookup(trap_oid)
    if meaning is None:
        return TrapMeaning(format_oid(trap_oid))
    if meaning.name in _ADDED or meaning.name in _REMOVED:
        for name, value in var_binds:
            if name[:-1] in (_UPS_ALARM_DESCR, _XUPS_ALARM_DESCR) and isinstance(value, tuple) and value in ALARMS:
                alarm, metric = ALARMS[value]
                return TrapMeaning(f"{meaning.name} {alarm}", metric, 1.0 if meaning.name in _ADDED else 0.0)
    return meaning
