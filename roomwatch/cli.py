"""The ``roomwatch`` command: agent, collector, demo, check-config, gen-token, setup, test-alert, report ….

Exit codes: 0 ok, 2 bad usage or bad config, 1 runtime failure.
Heavy imports happen inside each command so ``--help`` and ``check-config``
stay quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from roomwatch import __version__

__all__ = ["main"]

AGENT_KEYS = frozenset({"agent", "collector", "host", "devices", "actions", "traps"})
COLLECTOR_KEYS = frozenset({"listen", "tls", "storage", "agents", "rules", "channels", "routes", "web", "alerts",
                            "agent_timeout", "series_expire", "max_body", "max_body_decompressed", "body_timeout",
                            "oncall", "time_intervals", "heartbeat"})

#: Commands whose options and body live in their own module, imported only when the command (or the full
#: ``--help`` listing) needs it: ``roomwatch agent`` must not import the collector's and the alerting's code (the
#: agent's memory budget is tight, and those imports cost it about 2 MiB).
#: name → (help, module, function adding its arguments, function running it).
LAZY_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "discover": ("find SNMP, NUT, MQTT and Modbus devices, read each once and print the agent's devices: for them "
                 "(docs/discover.md)", "roomwatch.discover.main", "add_arguments", "run"),
    "test-alert": ("send a test notification through a configured channel and print its reply",
                   "roomwatch.commands.test_alert", "add_arguments", "run"),
    "hash-password": ("print a password hash for web.users (login for acknowledge and silences)",
                      "roomwatch.collector.webauth", "add_hash_password_arguments", "cmd_hash_password"),
    "report": ("print (or send) the daily inspection report (巡检日报)",
               "roomwatch.collector.report.cli", "add_arguments", "run"),
    "setup": ("first run: a few questions (role, site, room, collector, one channel), working config files, a test "
              "message; every question has an option, --yes never asks",
              "roomwatch.commands.setup", "add_arguments", "run_setup"),
    "oncall": ("print who is on duty for every route and level, and the next handover (值班表)",
               "roomwatch.commands.oncall", "add_arguments", "run"),
}


#: Files check-config reads besides agent and collector files (their kinds, for --kind).
PROFILE_KINDS = ("snmp-profile", "modbus-profile", "rules")
SNMP_PROFILE_KEYS = frozenset({"match", "probe", "points", "tables", "include", "include_first"})
RULE_FILE_KEYS = frozenset({"rules", "inhibit_rules", "local_fallback"})


def _kind_of(data: Any, forced: str | None) -> str | None:
    if forced:
        return forced
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if isinstance(data.get("rules"), list) and keys <= RULE_FILE_KEYS:  # a collector's rules: is a mapping
        return "rules"
    if isinstance(data.get("name"), str) and keys & SNMP_PROFILE_KEYS and not keys & AGENT_KEYS:
        return "snmp-profile"
    if "title" in keys and keys & {"registers", "inputs"} and not keys & AGENT_KEYS:
        return "modbus-profile"
    agent, coll = bool(keys & AGENT_KEYS), bool(keys & COLLECTOR_KEYS)
    if agent and not coll:
        return "agent"
    if coll and not agent:
        return "collector"
    return None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate each file; print every problem as file:line: key: message."""
    from roomwatch.core.configbase import ConfigError, load_yaml, weak_secrets
    from roomwatch.core.plural import plural

    bad = 0
    warnings: list[str] = []
    for path in args.files:
        try:
            try:
                data, _ = load_yaml(path)
            except ConfigError:
                # A profile may use YAML anchors and merge keys (<<:), which config files do not take.
                data = _plain_yaml(path)
                if _kind_of(data, args.kind) not in PROFILE_KINDS:
                    raise
            kind = _kind_of(data, args.kind)
            if kind in PROFILE_KINDS:
                trouble, summary = _check_other(path, kind)
                if trouble:
                    print(trouble, file=sys.stderr)
                    bad += 1
                elif not args.quiet:
                    print(f"{path}: OK ({summary})")
                continue
            if kind == "agent":
                from roomwatch.agent.config import load_agent_config

                cfg: Any = load_agent_config(path)
                summary = f"agent config for {cfg.agent.id!r}, {plural(len(cfg.all_devices()), 'device')}"
            elif kind == "collector":
                from roomwatch.collector.config import config_warnings, load_collector_config
                from roomwatch.core.configbase import Problem, dotted

                cfg = load_collector_config(path)
                summary = f"collector config, {plural(len(cfg.agents), 'agent')}, {plural(len(cfg.channels), 'channel')}"
                _, located = load_yaml(path)
                warnings += [str(Problem(path, located.line_of(key), dotted(key), f"warning: {text}"))
                             for key, text in config_warnings(cfg)]
            else:
                print(f"{path}: cannot tell whether this is an agent or a collector file "
                      f"(agent files have agent:/devices:, collector files have agents:/listen:); "
                      f"use --kind agent|collector (or {'|'.join(PROFILE_KINDS)})", file=sys.stderr)
                bad += 1
                continue
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            bad += 1
            continue
        for warning in weak_secrets(cfg):  # a working file with a guessable token: said, not refused
            print(f"{path}: WARNING: {warning}")
        if not args.quiet:
            print(f"{path}: OK ({summary})")
    for line in warnings:  # valid files: on stdout with the OK lines, exit 0
        print(line)
    return 2 if bad else 0


def _plain_yaml(path: str) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _check_other(path: str, kind: str) -> tuple[str | None, str]:
    """(problem or None, summary) for an SNMP profile, a Modbus register map or a rules file."""
    from roomwatch.core.plural import plural

    if kind == "snmp-profile":
        from pathlib import Path

        from roomwatch.drivers.snmp.profile_load import ProfileError, check_profile_file

        try:
            prof = check_profile_file(Path(path))
        except (ProfileError, OSError) as exc:
            return f"{path}: {exc}", ""
        rows = len(prof.points) + sum(len(t.points) for t in prof.tables)
        return None, f"SNMP profile {prof.name!r}, {plural(rows, 'row')}"
    if kind == "modbus-profile":
        from roomwatch.drivers.modbus.config import load_profile

        try:
            _, mprof = load_profile(path if "/" in path else "./" + path)  # a path, never a shipped name
        except ValueError as exc:
            return f"{path}: {exc}", ""
        what = plural(len(mprof.registers), "register") if mprof.registers else "dry-contact inputs"
        return None, f"Modbus register map {mprof.title!r}, {what}"
    from roomwatch.alerts.pack import LOCAL_FALLBACK_KEY
    from roomwatch.alerts.rules import RuleFile
    from roomwatch.core.configbase import ConfigError, load_model, load_yaml

    try:
        data, located = load_yaml(path)
        # local_fallback: the default pack's section for the agent (alerts/pack.py), not a key of a rules file
        data = {k: val for k, val in data.items() if k != LOCAL_FALLBACK_KEY}
        rules = load_model(path, RuleFile, data, located).rules
    except ConfigError as exc:
        return str(exc), ""
    return None, f"alert rules, {plural(len(rules), 'rule')}"


def cmd_agent(args: argparse.Namespace) -> int:
    from roomwatch.agent.main import main as agent_main

    return agent_main(args.config)


def cmd_collector(args: argparse.Namespace) -> int:
    from roomwatch.collector.main import main as collector_main

    return collector_main(args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from roomwatch.demo.run import run_demo

    return run_demo(args)


def _demo_duration(text: str) -> float:
    from roomwatch.core.configbase import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2s")
    return value


def cmd_gen_token(args: argparse.Namespace) -> int:
    """Print a new random agent token and the hash to put in the collector config."""
    import secrets

    from roomwatch.collector.agents import hash_token

    token = secrets.token_urlsafe(32)
    print(f"token:      {token}")
    print(f"token_hash: {hash_token(token)}")
    print("Put the token in the agent's collector.token (or token_file), the hash in the collector's agents[].token_hash.",
          file=sys.stderr)
    return 0


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``wanted`` (the command given) limits which commands' modules are imported."""
    parser = argparse.ArgumentParser(
        prog="roomwatch",
        description="Server-room monitor: UPS, temperature, humidity, doors, leaks; agent + collector.",
    )
    parser.add_argument("--version", action="version", version=f"roomwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("agent", help="run the agent (polls devices, pushes to the collector)",
                       description="Run the agent in the foreground; logs go to stderr (journald under systemd).")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="agent YAML file")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("collector", help="run the collector (ingest, /metrics, alerts, status page)",
                       description="Run the collector in the foreground.")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="collector YAML file")
    p.set_defaults(func=cmd_collector)

    p = sub.add_parser("demo", help="run collector + agent + simulated devices on 127.0.0.1",
                       description="Start a collector, an agent and simulated devices on 127.0.0.1 over their real "
                                   "protocols and print the URLs and a status page login (user demo, a password made "
                                   "up for this run). A demo rule alerts as soon as the door opens; notifications are "
                                   "printed as they arrive. Ctrl-C stops everything.")
    p.add_argument("--collector-port", type=int, default=9640, help="collector port (0 = any free port; default 9640)")
    p.add_argument("--agent-port", type=int, default=9641, help="agent port (0 = any free port; default 9641)")
    p.add_argument("--dir", metavar="DIR",
                   help="put configs, state and logs here and keep them; without it they go to a temporary "
                        "directory that is deleted on exit (kept, and its path printed, when something failed)")
    p.add_argument("--duration", type=float, default=0, metavar="SECONDS", help="stop after this long (0 = until Ctrl-C)")
    p.add_argument("--no-devices", action="store_true", help="only the host driver, no simulated devices")
    p.add_argument("--door-every", type=_demo_duration, default=None, metavar="DURATION",
                   help="how often the simulated door opens, e.g. 20s for a quick look or a test (default 3m; it "
                        "stays open 40 s, or half the period when that is shorter)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check-config", help="validate agent/collector YAML files",
                       description="Validate files; exit 0 if all are valid, 2 otherwise. Each problem is printed as "
                                   "FILE:LINE: KEY: what is wrong.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--kind", choices=["agent", "collector", *PROFILE_KINDS],
                   help="treat every file as this kind (else told by its keys)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("gen-token", help="generate an agent token and its hash",
                       description="Print a random agent token and the sha256 hash for the collector's agents list.")
    p.set_defaults(func=cmd_gen_token)

    import importlib

    for name, (help_text, module_name, add_name, run_name) in LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if wanted is None or wanted == name or (wanted not in sub.choices and wanted not in LAZY_COMMANDS):
            # this command (or the listing, or a mistyped name): its module gives its options
            module = importlib.import_module(module_name)
            getattr(module, add_name)(p)
            p.set_defaults(func=getattr(module, run_name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((a for a in args_in if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
