"""SNMP through pysnmp 7.1's asyncio command generators: SNMPv3 (USM), and v1/v2c with ``client: pysnmp``.

Raw numeric OIDs, no MIB lookups. The high-level ``pysnmp.hlapi`` wrappers
resolve every OID through a MIB view and, when pysmi is installed (snmpsim
pulls it in), import pysmi, requests and jinja2: measured here, 2x the CPU per
request and about 20 MiB more agent memory, for nothing, since profiles carry
numeric OIDs. So this module configures the engine the way ``hlapi``'s
``CommandGeneratorLcdConfigurator`` does (``pysnmp.entity.config``) and sends
PDUs with ``pysnmp.entity.rfc3413.cmdgen``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from roomwatch.drivers.snmp.profile import OID
from roomwatch.drivers.snmp.session import END_OF_MIB, Credentials, Engine, SnmpError, Target, decode_text

__all__ = ["AUTH_PROTOCOLS", "PRIV_PROTOCOLS", "PysnmpEngines", "PysnmpTarget"]

#: config names → pysnmp.entity.config attribute names (pysnmp 7.1).
AUTH_PROTOCOLS = {
    "MD5": "USM_AUTH_HMAC96_MD5",
    "SHA": "USM_AUTH_HMAC96_SHA",
    "SHA224": "USM_AUTH_HMAC128_SHA224",
    "SHA256": "USM_AUTH_HMAC192_SHA256",
    "SHA384": "USM_AUTH_HMAC256_SHA384",
    "SHA512": "USM_AUTH_HMAC384_SHA512",
}
PRIV_PROTOCOLS = {
    "DES": "USM_PRIV_CBC56_DES",
    "3DES": "USM_PRIV_CBC168_3DES",
    "AES": "USM_PRIV_CFB128_AES",
    "AES192": "USM_PRIV_CFB192_AES",  # Cisco-style key extension, what most vendors mean by "AES-192"
    "AES256": "USM_PRIV_CFB256_AES",
    "AES192C": "USM_PRIV_CFB192_AES_BLUMENTHAL",  # draft-blumenthal key extension
    "AES256C": "USM_PRIV_CFB256_AES_BLUMENTHAL",
}

_ERROR_HINTS = {
    "wrongDigest": "SNMPv3 authentication failed: wrong auth_key or auth_protocol",
    "unknownUserName": "SNMPv3 user is unknown to the agent",
    "unsupportedSecLevel": "the agent does not support this security_level for the user",
    "decryptionError": "SNMPv3 decryption failed: wrong priv_key or priv_protocol",
    "unknownEngineID": "SNMPv3 engine discovery failed",
    "notInTimeWindow": "SNMPv3 message out of the agent's time window",
    "authenticationError": "SNMPv3 authentication failed",
}


def _py(value: Any) -> Any:
    """A pysnmp value as plain Python (see :mod:`roomwatch.drivers.snmp.session`)."""
    from pyasn1.type import univ
    from pysnmp.proto import rfc1902, rfc1905

    if isinstance(value, rfc1905.EndOfMibView):
        return END_OF_MIB
    if isinstance(value, univ.Null):  # noSuchObject, noSuchInstance and Null (pyasn1's Null is an OctetString)
        return None
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, rfc1902.IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, rfc1902.Opaque):
        return None
    if isinstance(value, univ.OctetString):
        return decode_text(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value)
    return None


def _need_cryptography() -> None:
    """pysnmp encrypts SNMPv3 (DES, AES) with ``cryptography`` but imports it only optionally, and without it
    fails at the first request with an obscure error; roomwatch declares the dependency and names it here."""
    try:
        import cryptography  # noqa: F401 - only whether it is there
    except ImportError:
        raise SnmpError("SNMPv3 privacy (priv_key) needs the cryptography package (pip install cryptography)") from None


def _user_spec(creds: Credentials) -> tuple[Any, ...]:
    return (creds.auth_protocol, creds.auth_key, creds.priv_protocol, creds.priv_key)


class _Slot:
    """One pysnmp ``SnmpEngine`` and what is registered in it."""

    def __init__(self, config: Any, ids: Iterator[int]):
        from pysnmp.entity import engine

        self._config = config
        self._ids = ids
        self.engine = engine.SnmpEngine()
        self.communities: dict[str, str] = {}
        self.users: dict[str, tuple[Any, ...]] = {}
        self.params: dict[tuple[str, str, int], str] = {}
        self.domains: set[tuple[int, ...]] = set()

    def accepts(self, creds: Credentials) -> bool:
        """False when the v3 user name is already here with other keys."""
        known = self.users.get(creds.user)
        return creds.version != "3" or known is None or known == _user_spec(creds)

    def register(self, creds: Credentials, address: tuple[str, int], ipv6: bool, timeout: float, retries: int) -> str:
        cfg = self._config
        if creds.version == "3":
            security_name = creds.user
            if creds.user not in self.users:
                if creds.priv_key:
                    _need_cryptography()
                auth = getattr(cfg, AUTH_PROTOCOLS[creds.auth_protocol or "SHA"]) if creds.auth_key else cfg.USM_AUTH_NONE
                priv = getattr(cfg, PRIV_PROTOCOLS[creds.priv_protocol or "AES"]) if creds.priv_key else cfg.USM_PRIV_NONE
                cfg.add_v3_user(self.engine, creds.user, auth, creds.auth_key, priv, creds.priv_key)
                self.users[creds.user] = _user_spec(creds)
        else:
            security_name = self.communities.get(creds.community, "")
            if not security_name:
                security_name = f"c{next(self._ids)}"
                cfg.add_v1_system(self.engine, security_name, creds.community)
                self.communities[creds.community] = security_name
        mp_model = {"1": 0, "2c": 1, "3": 3}[creds.version]
        pkey = (security_name, creds.security_level, mp_model)
        params = self.params.get(pkey)
        if params is None:
            params = f"p{next(self._ids)}"
            cfg.add_target_parameters(self.engine, params, security_name, creds.security_level, mp_model)
            self.params[pkey] = params
        addr_name = f"a{next(self._ids)}"
        cfg.add_target_address(self.engine, addr_name, self._transport(ipv6), address, params,
                               max(1, round(timeout * 100)), retries)
        return addr_name

    def _transport(self, ipv6: bool) -> tuple[int, ...]:
        from pysnmp.carrier.asyncio.dgram import udp, udp6

        mod = udp6 if ipv6 else udp
        if mod.DOMAIN_NAME not in self.domains:
            transport = (udp6.Udp6AsyncioTransport if ipv6 else udp.UdpAsyncioTransport)().open_client_mode()
            self._config.add_transport(self.engine, mod.DOMAIN_NAME, transport)
            self.domains.add(mod.DOMAIN_NAME)
        name: tuple[int, ...] = mod.DOMAIN_NAME
        return name


class PysnmpEngines:
    """The pysnmp engines of the agent.

    Normally one ``SnmpEngine`` (one UDP socket) serves every device. pysnmp keys SNMPv3 users
    by name, so a device whose user has the same name as another's but other keys (two UPS
    cards set up by different people, or a mistyped key) gets an engine of its own.
    """

    def __init__(self) -> None:
        from pysnmp.entity import config

        self._config = config
        self._ids = itertools.count(1)
        self._slots: list[_Slot] = []
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._slots)

    def target(self, engine: Engine, creds: Credentials, address: tuple[str, int], ipv6: bool, where: str,
               timeout: float, retries: int) -> PysnmpTarget:
        slot = next((s for s in self._slots if s.accepts(creds)), None)
        if slot is None:
            slot = _Slot(self._config, self._ids)
            self._slots.append(slot)
        addr_name = slot.register(creds, address, ipv6, timeout, retries)
        return PysnmpTarget(engine, self, slot.engine, addr_name, creds, where, timeout, retries)

    def forget(self, snmp_engine: Any, addr_name: str) -> None:
        if not self._closed:
            self._config.delete_target_address(snmp_engine, addr_name)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for slot in self._slots:
                slot.engine.close_dispatcher()


class PysnmpTarget(Target):
    """A device read through pysnmp."""

    def __init__(self, engine: Engine, owner: PysnmpEngines, snmp_engine: Any, addr_name: str, creds: Credentials,
                 where: str, timeout: float, retries: int):
        super().__init__(engine, creds, where, timeout, retries)
        self._owner = owner
        self.snmp_engine = snmp_engine
        self.addr_name = addr_name
        self._context = creds.context.encode()
        self._names: dict[OID, Any] = {}

    def close(self) -> None:
        self._owner.forget(self.snmp_engine, self.addr_name)

    def _name(self, oid: OID) -> Any:
        name = self._names.get(oid)
        if name is None:
            from pysnmp.proto.rfc1902 import ObjectName

            name = self._names[oid] = ObjectName(oid)
        return name

    async def _exchange(self, kind: str, oids: Sequence[OID], max_repetitions: int) -> tuple[int, int, list[Any]]:
        from pysnmp.entity.rfc3413 import cmdgen
        from pysnmp.proto.rfc1902 import Null

        future: asyncio.Future[tuple[Any, int, int, Any]] = asyncio.get_running_loop().create_future()

        def done(_engine: Any, _handle: Any, indication: Any, status: Any, index: Any, var_binds: Any, _ctx: Any) -> None:
            if not future.done():  # a poll cancelled by its timeout leaves pysnmp's callback behind
                future.set_result((indication, int(status or 0), int(index or 0), var_binds))

        var_binds = [(self._name(o), Null("")) for o in oids]
        eng, ctx = self.snmp_engine, self._context
        if kind == "get":
            cmdgen.GetCommandGenerator().send_varbinds(eng, self.addr_name, None, ctx, var_binds, done)
        elif kind == "next":
            cmdgen.NextCommandGeneratorSingleRun().send_varbinds(eng, self.addr_name, None, ctx, var_binds, done)
        else:
            cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(eng, self.addr_name, None, ctx, 0, max_repetitions,
                                                                 var_binds, done)
        indication, status, index, answer = await future
        if indication:
            key = type(indication).__name__
            key = key[:1].lower() + key[1:]
            if key == "requestTimedOut":
                raise self.timed_out()
            raise SnmpError(f"{self.where}: {_ERROR_HINTS.get(key) or indication}")
        return status, index, [(tuple(name), _py(value)) for name, value in answer]
