"""``snmp`` driver: UPS units and environment monitors read over SNMP v1, v2c or v3.

A poll is one GET of the profile's scalar OIDs (batched) plus, when the
profile has sensor tables (or an alarm table with alarms present), one
side-by-side GETBULK walk of their columns (GETNEXT on SNMPv1). ``profile:
auto`` reads sysObjectID once and picks the profile by it and, when that gives
nothing, by which MIBs answer (:mod:`roomwatch.drivers.snmp.autoselect`); after a failed
poll it chooses again, in case the card was swapped. The mapping itself is data
(``drivers/snmp/profiles/*.yaml``) evaluated by :mod:`roomwatch.drivers.snmp.readings`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Model, Secret
from roomwatch.drivers.base import DeviceError, Driver, Reading
from roomwatch.drivers.registry import register
from roomwatch.drivers.snmp.autoselect import choose
from roomwatch.drivers.snmp.profile import FALLBACK, OID, Profile, all_profiles, get_profile
from roomwatch.drivers.snmp.readings import contact_readings, evaluate
from roomwatch.drivers.ups import UpsDeviceConfig, battery_age_reading

__all__ = ["ContactConfig", "SnmpConfig", "SnmpDriver"]

SYS_OBJECT_ID: OID = (1, 3, 6, 1, 2, 1, 1, 2, 0)
DEFAULT_ATTEMPT_TIMEOUT = 2.0  # seconds per SNMP attempt (net-snmp uses 1s, snmp_exporter 5s)
#: SNMP requests in flight at once for the whole agent: polite to a busy LAN, ample for 100+ devices.
MAX_IN_FLIGHT = 32


def _as_text(value: Any) -> Any:
    # YAML reads `version: 1` and `version: 3` as numbers; `2c` is text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


AuthProtocol = Annotated[Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"], BeforeValidator(_upper)]
PrivProtocol = Annotated[Literal["DES", "3DES", "AES", "AES192", "AES256", "AES192C", "AES256C"],
                         BeforeValidator(_upper)]


class ContactConfig(Model):
    """What a dry contact of the device is wired to, and which state means "open door / wet / smoke"."""

    kind: Literal["door", "leak", "smoke"]
    active: Literal["open", "closed", "alarm"] = Field(
        description="open / closed: the contact's electrical state; alarm: the device's own alarm state")


class SnmpConfig(UpsDeviceConfig):
    """Options of an ``snmp`` device (see docs/snmp.md)."""

    driver: Literal["snmp"]
    host: str = Field(min_length=1, description="IP address or host name of the SNMP agent")
    port: int = Field(default=161, ge=1, le=65535)
    version: Annotated[Literal["1", "2c", "3"], BeforeValidator(_as_text)] = "2c"
    community: Secret | None = Field(default=None, description="v1/v2c community")
    user: str | None = Field(default=None, min_length=1, description="SNMPv3 user name")
    auth_protocol: AuthProtocol = "SHA"
    auth_key: Secret | None = None
    priv_protocol: PrivProtocol = "AES"
    priv_key: Secret | None = None
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] | None = Field(
        default=None, description="default: authPriv with priv_key, authNoPriv with only auth_key")
    context: str = Field(default="", description="SNMPv3 context name (snmpsim: the recording's name)")
    profile: str = Field(default="auto", description="auto (by sysObjectID, then by which MIB answers) or a profile "
                                                     "name from docs/snmp.md")
    timeout: Duration | None = Field(default=None, gt=0, description="wait per SNMP attempt (default 2s)")
    retries: int = Field(default=1, ge=0, le=10, description="attempts after the first one that timed out")
    max_repetitions: int = Field(default=10, ge=0, le=100, description="GETBULK rows per request; 0 = GETNEXT")
    client: Literal["pysnmp", "builtin"] = Field(
        default="pysnmp", description="pysnmp: pysnmp for every version; builtin: roomwatch's own v1/v2c client "
                                      "(a third of the CPU, no pysnmp import), pysnmp for v3")
    contacts: dict[str, ContactConfig] = Field(
        default_factory=dict, description="sensor name of a dry contact → what it is wired to")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        all_profiles()  # a broken profile file shows up in check-config, not at the first poll
        if name != "auto":
            try:
                get_profile(name)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
        return name

    @model_validator(mode="after")
    def _credentials(self) -> SnmpConfig:
        if self.version in ("1", "2c"):
            if self.community is None:
                raise ValueError(f"community is required for SNMP version {self.version}")
            for key in ("user", "auth_key", "priv_key", "security_level"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is an SNMPv3 option; this device uses version {self.version}")
            return self
        if self.community is not None:
            raise ValueError("community is for SNMP v1/v2c; version 3 uses user and keys")
        if self.user is None:
            raise ValueError("user is required for SNMP version 3")
        level = self.security_level or ("authPriv" if self.priv_key else "authNoPriv" if self.auth_key else "noAuthNoPriv")
        need_auth = level in ("authNoPriv", "authPriv")
        if need_auth and self.auth_key is None:
            raise ValueError(f"security_level {level} needs auth_key")
        if level == "authPriv" and self.priv_key is None:
            raise ValueError("security_level authPriv needs priv_key")
        if level != "authPriv" and self.priv_key is not None:
            raise ValueError(f"priv_key is given but security_level is {level}")
        if not need_auth and self.auth_key is not None:
            raise ValueError("auth_key is given but security_level is noAuthNoPriv")
        for key in ("auth_key", "priv_key"):
            secret = getattr(self, key)
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{key} must be at least 8 characters (RFC 3414 USM passphrase)")
        self.security_level = level
        return self


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@register
class SnmpDriver(Driver):
    """Polls one SNMP agent with a vendor profile."""

    name = "snmp"
    config_model = SnmpConfig
    requires = ("pysnmp", "cryptography")

    def __init__(self, config: SnmpConfig, context: Any):
        super().__init__(config, context)
        self._attempt = config.timeout or DEFAULT_ATTEMPT_TIMEOUT
        self._fixed: Profile | None = None if config.profile == "auto" else get_profile(config.profile)
        self._profile: Profile | None = self._fixed
        self._target: Any = None
        self._engine: Any = None
        self._address: tuple[str, int] | None = None
        self._stale = False
        self._contacts = {name: (c.kind, c.active) for name, c in config.contacts.items()}

    @property
    def profile(self) -> Profile | None:
        """The profile in use: the configured one, or what ``auto`` chose at the last poll (None before it)."""
        return self._profile

    def poll_timeout(self, default: float) -> float:
        """The agent's budget for one poll: room for a few requests that each use every retry."""
        c: SnmpConfig = self.config
        return max(10.0, 3 * self._attempt * (c.retries + 1) + 1.0)

    def _credentials(self) -> Any:
        from roomwatch.drivers.snmp.session import Credentials

        c: SnmpConfig = self.config

        def reveal(secret: Any) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        return Credentials(version=c.version, community=reveal(c.community) or "", user=c.user or "",
                           auth_protocol=c.auth_protocol, auth_key=reveal(c.auth_key), priv_protocol=c.priv_protocol,
                           priv_key=reveal(c.priv_key), context=c.context)

    async def _resolve(self) -> tuple[tuple[str, int], bool]:
        host, port = self.config.host, self.config.port
        if _is_ip(host):
            return (host, port), ipaddress.ip_address(host).version == 6
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise DeviceError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        family, _, _, _, sockaddr = infos[0]
        return (str(sockaddr[0]), port), family == socket.AF_INET6

    async def start(self) -> None:
        """Register the device with the agent's shared SNMP engine."""
        from roomwatch.drivers.snmp.session import Engine

        self._engine = self.context.shared(("snmp", "engine"), lambda: Engine(MAX_IN_FLIGHT))
        address, ipv6 = await self._resolve()
        self._target = await self._engine.target(self._credentials(), address, ipv6, self._attempt, self.config.retries,
                                                 self.config.client)
        self._address = address

    async def _refresh_address(self) -> None:
        # A card that took a new DHCP lease keeps its name: look it up again after a failure.
        address, ipv6 = await self._resolve()
        if address != self._address:
            self._target.close()
            self._target = await self._engine.target(self._credentials(), address, ipv6, self._attempt,
                                                     self.config.retries, self.config.client)
            self._address = address

    async def _sys_object_id(self) -> OID | None:
        found = (await self._target.get([SYS_OBJECT_ID])).get(SYS_OBJECT_ID)
        return found if isinstance(found, tuple) else None

    async def _choose(self) -> tuple[Profile, list[Reading]]:
        """The profile for this device (fixed, or chosen by :mod:`roomwatch.drivers.snmp.autoselect`) and a first read."""
        if self._fixed is not None:
            profile = self._fixed
            if profile.scale_rules:  # a rule may depend on the card (sysObjectID)
                profile = profile.for_device(await self._sys_object_id())
            return profile, await self._read(profile)
        sys_oid = await self._sys_object_id()
        profiles = {name: prof.for_device(sys_oid) for name, prof in all_profiles().items()}
        choice = await choose(profiles, sys_oid, self._collect, self._target.next)
        if choice is None:
            # Nothing usable (every object absent or of a wrong type): as good as down, and the
            # DeviceDown alert gets someone to look at the card or the profile.
            raise DeviceError(f"the device answers but gives no usable value for profile {FALLBACK} or any profile "
                              f"its sysObjectID or MIBs point to; see docs/snmp.md, \"My device is not listed\"")
        if self._profile is None or choice.profile.name != self._profile.name:
            self.log.info("%s: profile %s (%s)", self.config.name, choice.profile.name, choice.how)
        return choice.profile, choice.readings

    async def poll(self) -> Sequence[Reading]:
        """Read the device once; any SNMP failure raises (the agent marks the device down)."""
        try:
            if self._stale and not _is_ip(self.config.host):
                await self._refresh_address()
            if self._profile is None or self._stale:
                self._profile, readings = await self._choose()
            else:
                readings = await self._read(self._profile)
        except BaseException:
            self._stale = True
            raise
        self._stale = False
        return readings

    async def _read(self, profile: Profile) -> list[Reading]:
        readings = await self._collect(profile)
        if not readings:
            raise DeviceError(f"the device answers but gives no usable value for profile {profile.name} "
                              f"(objects missing or of the wrong type); try profile: one of {', '.join(sorted(all_profiles()))}")
        return readings

    async def _collect(self, profile: Profile) -> list[Reading]:
        """One read of the device with ``profile``: its readings, empty when nothing usable came back."""
        target = self._target
        scalars = await target.get(profile.scalar_oids) if profile.scalar_oids else {}
        tables: dict[OID, dict[OID, dict[int, Any]]] = {}
        # Table columns, and the name columns of the tables that name their rows from another table.
        table_columns = list(dict.fromkeys(oid for t in profile.tables for oid in t.walked()))
        # An alarm table is walked only when its count of alarms is not 0 (the usual case: one PDU saved).
        alarms = [a for a in profile.alarms if a.present is None or scalars.get(a.present) not in (0, None)]
        columns = table_columns + [a.walked for a in alarms]
        if columns:
            walked = await target.walk(columns, self.config.max_repetitions)
            for column in table_columns:
                rows = tables.setdefault(column[:-1], {})
                for index, value in walked.get(column, {}).items():
                    rows.setdefault(index, {})[column[-1]] = value
            for alarm in alarms:
                tables[alarm.entry] = {i: {alarm.column: val} for i, val in walked.get(alarm.walked, {}).items()}
        result = evaluate(profile, scalars, tables, self.drops)
        if not result.readings:
            return []
        readings = result.readings + contact_readings(result.readings, self._contacts)
        if result.info:
            readings.append(Reading(v.UPS_INFO, 1.0, result.info))
        age = battery_age_reading(self.config.battery_installed or result.battery_date)
        if age is not None:
            readings.append(age)
        return readings

    async def stop(self) -> None:
        """Forget the device (the shared engine is closed by the agent)."""
        if self._target is not None:
            self._target.close()
            self._target = None
