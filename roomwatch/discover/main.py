"""``roomwatch discover``: find the room's devices and print the agent's ``devices:`` for them.

All sources run at once (an SNMP sweep, each upsd, each broker, each Modbus line), so the run
takes about one ``--timeout`` (the MQTT listening time, or the SNMP wait for silent addresses),
plus the polls of what answered. The YAML goes to stdout, progress and problems to stderr.
Exit status: 0 done (even when nothing was found), 1 a named upsd, broker or Modbus line could
not be reached (what was found is printed anyway), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from roomwatch import __version__
from roomwatch.discover.targets import TargetError, parse_modbus_target, parse_snmp_targets, parse_units

if TYPE_CHECKING:  # the CLI builds its parser from this module for every command: keep it light
    from roomwatch.discover.report import Found, Outcome

__all__ = ["add_arguments", "run"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 256


def _duration(text: str) -> float:
    from roomwatch.core.configbase import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0.1 <= value <= 120:
        raise argparse.ArgumentTypeError("between 100ms and 2m")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``roomwatch discover`` (see docs/discover.md)."""
    g = p.add_argument_group("SNMP")
    g.add_argument("--snmp", nargs="+", action="extend", default=[], metavar="TARGET",
                   help="address, host name, CIDR block (at most a /22 in all) or range a.b.c.d-e / a.b.c.d-a.b.c.e")
    g.add_argument("--port", type=int, default=161, help="SNMP port of every target (default 161)")
    g.add_argument("--community", nargs="+", action="extend", default=[], metavar="C",
                   help="v1/v2c communities to try, in order (default: public, unless a v3 user is given)")
    g.add_argument("--v3-user", metavar="USER", help="SNMPv3 user to try as well")
    g.add_argument("--v3-auth-protocol", default="SHA", metavar="P", help="MD5, SHA (default), SHA224 … SHA512")
    g.add_argument("--v3-auth-key", metavar="KEY", help="SNMPv3 authentication passphrase (8+ characters)")
    g.add_argument("--v3-priv-protocol", default="AES", metavar="P", help="DES, 3DES, AES (default), AES192, AES256 …")
    g.add_argument("--v3-priv-key", metavar="KEY", help="SNMPv3 privacy passphrase (8+ characters)")
    g.add_argument("--v3-context", default="", metavar="NAME", help="SNMPv3 context name (default empty)")
    g.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                   help=f"SNMP addresses probed at once (default {DEFAULT_CONCURRENCY})")
    g = p.add_argument_group("NUT")
    g.add_argument("--nut", nargs="+", action="extend", default=[], metavar="HOST[:PORT]",
                   help="upsd to list (every UPS it serves; port 3493 by default)")
    g.add_argument("--nut-user", metavar="USER", help="upsd.users user (also written into the entries)")
    g.add_argument("--nut-password", metavar="PASSWORD")
    g = p.add_argument_group("MQTT")
    g.add_argument("--mqtt", nargs="+", action="extend", default=[], metavar="URL",
                   help="broker to listen to (mqtt://host[:port] or mqtts://…) for --timeout")
    g.add_argument("--mqtt-user", metavar="USER")
    g.add_argument("--mqtt-password", metavar="PASSWORD")
    g.add_argument("--no-tasmota-query", action="store_true",
                   help="do not ask Tasmota boards heard only by their LWT for their sensors (cmnd/<t>/STATUS 10)")
    g = p.add_argument_group("Modbus")
    g.add_argument("--modbus", nargs="+", action="extend", default=[], metavar="LINE",
                   help="HOST[:PORT], tcp://…, rtu-over-tcp://… or a serial port /dev/ttyUSB0[:BAUD[:PARITY]]")
    g.add_argument("--modbus-units", default="1-16", metavar="IDS", help="unit ids to probe (default 1-16)")
    p.add_argument("--timeout", type=_duration, default=DEFAULT_TIMEOUT, metavar="D",
                   help=f"wait per SNMP target and upsd, MQTT listening time (default {DEFAULT_TIMEOUT:g}s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the drivers' own messages too")


def _v3(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.v3_user:
        if args.v3_auth_key or args.v3_priv_key:
            raise TargetError("--v3-auth-key/--v3-priv-key need --v3-user")
        return None
    out: dict[str, Any] = {"user": args.v3_user, "auth_protocol": args.v3_auth_protocol,
                           "priv_protocol": args.v3_priv_protocol, "context": args.v3_context}
    if args.v3_auth_key:
        out["auth_key"] = args.v3_auth_key
    if args.v3_priv_key:
        out["priv_key"] = args.v3_priv_key
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of the CLI subcommand."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = _plan(args)
    except (TargetError, ValueError) as exc:
        print(f"roomwatch discover: {exc}", file=sys.stderr)
        return 2
    if not any(plan[k] for k in ("snmp", "nut", "mqtt", "modbus")):
        print("roomwatch discover: nothing to look at; give --snmp, --nut, --mqtt or --modbus (see --help)",
              file=sys.stderr)
        return 2
    return asyncio.run(_discover(args, plan))


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    from roomwatch.discover.snmp import credentials_from
    from roomwatch.discover.targets import parse_hostport_target

    if not 1 <= args.port <= 65535:
        raise TargetError(f"--port {args.port}: use 1..65535")
    if not 1 <= args.concurrency <= 1024:
        raise TargetError("--concurrency: use 1..1024")
    targets = parse_snmp_targets(args.snmp)
    v3 = _v3(args)
    communities = args.community or ([] if v3 else ["public"])
    try:
        credentials = credentials_from(communities, v3) if targets else []
    except ValueError as exc:  # pydantic's message for a bad v3 option
        raise TargetError(f"SNMPv3 options: {exc}") from None
    for spec in args.nut:
        parse_hostport_target(spec, 3493, "NUT")
    if (args.nut_user is None) != (args.nut_password is None):
        raise TargetError("give both --nut-user and --nut-password, or neither")
    from roomwatch.drivers.mqtt.connection import parse_broker_url

    for url in args.mqtt:
        parse_broker_url(url)
    return {"snmp": targets, "credentials": credentials, "nut": args.nut, "mqtt": args.mqtt,
            "modbus": [parse_modbus_target(m) for m in args.modbus], "units": parse_units(args.modbus_units)}


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _discover(args: argparse.Namespace, plan: dict[str, Any]) -> int:
    from roomwatch.discover.report import Outcome, assign_names, render, validate

    started = time.monotonic()
    jobs: list[Awaitable[Outcome]] = []
    snmp_scan = None
    if plan["snmp"]:
        from roomwatch.discover.snmp import SnmpScan

        snmp_scan = SnmpScan(plan["snmp"], args.port, plan["credentials"], args.timeout, args.concurrency, _progress)

        async def snmp_job() -> Outcome:
            assert snmp_scan is not None
            return Outcome(await snmp_scan.run())

        jobs.append(snmp_job())
    if plan["nut"]:
        from roomwatch.discover.nut import discover_upsd

        jobs += [discover_upsd(spec, args.nut_user, args.nut_password, args.timeout, _progress) for spec in plan["nut"]]
    if plan["mqtt"]:
        from roomwatch.discover.mqtt import discover_broker

        jobs += [discover_broker(url, args.mqtt_user, args.mqtt_password, args.timeout, _progress,
                                 query_tasmota=not args.no_tasmota_query) for url in plan["mqtt"]]
    if plan["modbus"]:
        from roomwatch.discover.modbus import discover_line

        jobs += [discover_line(t, plan["units"], args.timeout, _progress) for t in plan["modbus"]]
    outcomes = await asyncio.gather(*jobs)
    found: list[Found] = [f for o in outcomes for f in o.found]
    problems: list[str] = [p for o in outcomes for p in o.problems]
    found.sort(key=lambda f: f.sort_key)
    assign_names(found)
    footer = []
    if snmp_scan is not None and (snmp_scan.unread or snmp_scan.refused):
        footer.append("Answered SNMP but gave no reading (not written; see docs/discover.md, \"my device is not listed\"):")
        footer += [f"  {u}" for u in snmp_scan.unread + snmp_scan.refused]
    if problems:
        footer.append("Problems:")
        footer += [f"  {p}" for p in problems]
    counts = {k: sum(1 for f in found if f.kind == k) for k in ("snmp", "nut", "mqtt", "modbus")}
    elapsed = time.monotonic() - started
    header = [f"roomwatch discover ({__version__}), {time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.1f}s: "
              f"{len(found)} device{'s' if len(found) != 1 else ''} ("
              + ", ".join(f"{'Modbus' if k == 'modbus' else k.upper()} {n}" for k, n in counts.items()) + ").",
              "Paste the devices below into the agent file (config/agent.example.yaml explains every key); "
              "each was read once, with the values shown above it."]
    text = render(found, header, footer)
    trouble = validate(text)
    if trouble:  # a bug in discover, never the user's fault: say so rather than print a file that fails
        print("roomwatch discover: the generated devices do not pass check-config (please report this):",
              *trouble, sep="\n  ", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    sys.stdout.flush()
    _progress(f"discover: {len(found)} device{'s' if len(found) != 1 else ''} in {elapsed:.1f}s"
              + (f"; {len(problems)} problem{'s' if len(problems) != 1 else ''} (listed at the end)" if problems else ""))
    return 1 if any(o.unreachable for o in outcomes) else 0
