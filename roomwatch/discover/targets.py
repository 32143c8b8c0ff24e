"""What ``roomwatch discover`` may scan: SNMP targets, upsd and Modbus endpoints, parsed and capped.

An SNMP target is one of

* an address: ``192.168.1.20``, ``fe80::1`` (IPv4 or IPv6);
* a host name: ``ups1.lan`` (resolved when the scan starts; the name is kept in the config);
* a CIDR block: ``192.168.1.0/24`` (its host addresses: no network or broadcast address for /30 and
  wider; host bits may be set, ``192.168.1.7/24`` means the same block, as in nmap);
* a range: ``192.168.1.10-20`` (last octet) or ``192.168.1.10-192.168.2.5`` (any two addresses).

The addresses of all targets together are capped at :data:`MAX_ADDRESSES` (a /22): discover is
for a room's subnet, and a bigger sweep is a network scan someone should plan. A larger request is
refused before a single packet leaves, with a message that says how to split it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["MAX_ADDRESSES", "MAX_UNITS", "ModbusTarget", "SnmpTarget", "TargetError", "parse_hostport_target",
           "parse_modbus_target", "parse_snmp_targets", "parse_units"]

#: Most addresses one discover run may probe (a /22). Larger blocks are refused.
MAX_ADDRESSES = 1024
#: Modbus unit ids on one line: 1..247 (Modbus over Serial Line v1.02 §2.2; 0 is broadcast).
MAX_UNITS = 247

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(ValueError):
    """A target the user typed cannot be scanned; the message says why and what would work."""


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    """One thing to probe: an address, or a host name to resolve (``host`` is what the config will say)."""

    host: str
    address: Address | None = None  # None: a host name, resolved at scan time

    def sort_key(self) -> tuple[int, int, int, str]:
        if self.address is None:
            return (1, 0, 0, self.host)  # host names after addresses
        return (0, self.address.version, int(self.address), self.host)


def _address(text: str, what: str) -> Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise TargetError(f"{what}: {text!r} is not an IP address") from None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def _too_many(target: str, count: int) -> TargetError:
    return TargetError(f"{target} holds {count} addresses; discover probes at most {MAX_ADDRESSES} (a /22) per run. "
                       "Name the subnets that hold the devices (e.g. 192.168.1.0/24), or run it once per block.")


def _expand(text: str) -> list[SnmpTarget]:
    target = text.strip()
    if not target:
        raise TargetError("an empty SNMP target")
    if "/" in target:
        try:
            net = ipaddress.ip_network(target, strict=False)
        except ValueError as exc:
            raise TargetError(f"{target!r} is not a CIDR block such as 192.168.1.0/24 ({exc})") from None
        if net.num_addresses > MAX_ADDRESSES + 2:
            raise _too_many(target, net.num_addresses)
        hosts: list[Address] = list(net.hosts()) if net.num_addresses > 2 else list(net)
        return [SnmpTarget(str(a), a) for a in hosts]
    first_text, dash, last_text = target.partition("-")
    if dash and _is_address(first_text):
        first = _address(first_text, target)
        last_text = last_text.strip()
        if last_text.isdigit() and isinstance(first, ipaddress.IPv4Address):
            octets = str(first).split(".")
            if int(last_text) > 255:
                raise TargetError(f"{target!r}: {last_text} is not an octet (0..255)")
            last: Address = ipaddress.ip_address(".".join([*octets[:3], last_text]))
        else:
            last = _address(last_text, target)
        if first.version != last.version:
            raise TargetError(f"{target!r}: a range cannot mix IPv4 and IPv6")
        if int(last) < int(first):
            raise TargetError(f"{target!r}: the range ends before it starts")
        count = int(last) - int(first) + 1
        if count > MAX_ADDRESSES:
            raise _too_many(target, count)
        return [SnmpTarget(str(a), a) for a in (type(first)(int(first) + i) for i in range(count))]
    try:
        addr = ipaddress.ip_address(target)
    except ValueError:
        if not _HOSTNAME.match(target) or target.replace(".", "").isdigit():
            raise TargetError(f"{target!r} is not an address, host name, CIDR block (a.b.c.d/24) or range "
                              "(a.b.c.d-e or a.b.c.d-a.b.c.e)") from None
        return [SnmpTarget(target.rstrip(".").lower())]
    return [SnmpTarget(str(addr), addr)]


def _unicast(t: SnmpTarget, text: str) -> SnmpTarget:
    a = t.address
    if a is not None and (a.is_multicast or a.is_unspecified or a == ipaddress.IPv4Address("255.255.255.255")):
        raise TargetError(f"{text!r}: {a} is a multicast, broadcast or unspecified address; name the devices' "
                          "subnet instead (e.g. 192.168.1.0/24)")
    return t


def parse_snmp_targets(texts: list[str]) -> list[SnmpTarget]:
    """Every distinct target of ``texts`` in address order (host names last); TargetError on bad input or too many."""
    seen: dict[str, SnmpTarget] = {}
    for text in texts:
        for t in (_unicast(x, text) for x in _expand(text)):
            seen.setdefault(t.host, t)
            if len(seen) > MAX_ADDRESSES:
                raise TargetError(f"the targets together hold more than {MAX_ADDRESSES} addresses (a /22); "
                                  "discover fewer at a time")
    return sorted(seen.values(), key=SnmpTarget.sort_key)


def parse_hostport_target(text: str, default_port: int, what: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address → (host, port)."""
    value = text.strip()
    if not value:
        raise TargetError(f"an empty {what} address")
    host, port_text = value, ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise TargetError(f"{what} {text!r}: expected [address]:port")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    if port_text and (not port_text.isdigit() or not 1 <= int(port_text) <= 65535):
        raise TargetError(f"{what} {text!r}: the port must be a number 1..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise TargetError(f"{what} {text!r}: {host!r} is not a host name or address") from None
    return host, int(port_text) if port_text else default_port


@dataclass(frozen=True, slots=True)
class ModbusTarget:
    """A Modbus line: a TCP gateway (``tcp`` or ``rtu-over-tcp``) or a serial port (``rtu``)."""

    transport: str
    host: str | None = None
    port: int = 502
    serial_port: str | None = None
    baudrate: int | None = None  # serial: None = each profile's own default line settings
    parity: str | None = None

    def describe(self) -> str:
        if self.transport == "rtu":
            line = f" {self.baudrate} baud" if self.baudrate else ""
            return f"{self.serial_port}{line}{' parity ' + self.parity if self.parity else ''}"
        return f"{self.transport}://{self.host}:{self.port}"


def parse_modbus_target(text: str) -> ModbusTarget:
    """``HOST[:PORT]``, ``tcp://HOST[:PORT]``, ``rtu-over-tcp://HOST[:PORT]`` or ``/dev/ttyX[:BAUD[:PARITY]]``."""
    value = text.strip()
    if value.startswith("/"):
        path, _, rest = value.partition(":")
        baud_text, _, parity = rest.partition(":")
        baud = None
        if baud_text:
            if not baud_text.isdigit() or not 300 <= int(baud_text) <= 4_000_000:
                raise TargetError(f"Modbus serial {text!r}: the baud rate must be a number 300..4000000")
            baud = int(baud_text)
        parity = parity.strip().upper()
        if parity and parity not in ("N", "E", "O"):
            raise TargetError(f"Modbus serial {text!r}: parity is N, E or O")
        return ModbusTarget("rtu", serial_port=path, baudrate=baud, parity=parity or None)
    transport = "tcp"
    for scheme in ("tcp://", "rtu-over-tcp://"):
        if value.startswith(scheme):
            transport, value = scheme[:-3], value[len(scheme):]
            break
    else:
        if "://" in value:
            raise TargetError(f"Modbus {text!r}: use tcp://HOST[:PORT], rtu-over-tcp://HOST[:PORT] or a serial port "
                              "path such as /dev/ttyUSB0[:9600[:N]]")
    host, port = parse_hostport_target(value, 502, "Modbus")
    return ModbusTarget(transport, host=host, port=port)


def parse_units(text: str) -> list[int]:
    """``1-16``, ``1,2,10-12`` → unit ids (1..247, at most :data:`MAX_UNITS`)."""
    out: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        lo_text, sep, hi_text = part.partition("-")
        if not lo_text.isdigit() or (sep and not hi_text.strip().isdigit()):
            raise TargetError(f"unit ids {text!r}: write a list or ranges such as 1-16 or 1,2,10-12")
        lo, hi = int(lo_text), int(hi_text) if sep else int(lo_text)
        if not 1 <= lo <= hi <= 247:
            raise TargetError(f"unit ids {part!r}: Modbus unit ids are 1..247 (0 is broadcast), low to high")
        out.update(dict.fromkeys(range(lo, hi + 1)))
    return list(out)
