"""``roomwatch report -c collector.yaml [--date D] [--format F] [--send]``: the daily report on demand."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="collector YAML file (its storage: is read)")
    p.add_argument("--date", metavar="YYYY-MM-DD",
                   help="the report sent on this day (24 h ending at report.time); default: the latest")
    p.add_argument("--lang", "--language", dest="lang", choices=["zh-CN", "en"],
                   help="language (default: report.language, else web.language)")
    p.add_argument("--format", choices=["text", "markdown", "html", "json"], default="text")
    p.add_argument("--url", metavar="URL",
                   help="read a running collector's /api/v1/history and /api/v1/alerts/history instead of the store file")
    p.add_argument("--send", action="store_true", help="also send it through the report's channels")


def run(args: argparse.Namespace) -> int:
    from roomwatch.collector.config import load_collector_config
    from roomwatch.collector.report.compute import compute_report, report_window
    from roomwatch.collector.report.render import render_html, render_markdown, render_text
    from roomwatch.collector.report.service import build_report, send_report
    from roomwatch.collector.report.sources import HTTPHistory
    from roomwatch.core.configbase import ConfigError

    try:
        cfg = load_collector_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    day = None
    if args.date:
        try:
            day = dt.date.fromisoformat(args.date)
        except ValueError:
            print(f"--date must be YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
            return 2
    try:
        if args.url:
            start, end = report_window(cfg.report, day)
            source = HTTPHistory(args.url)
            report = compute_report(source, source, cfg.report, start, end, cfg.rules)
        else:
            report = build_report(cfg, day)
    except OSError as exc:
        print(f"cannot read the collector's data: {exc}", file=sys.stderr)
        return 1
    lang = args.lang or cfg.report.language or cfg.web.language
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    elif args.format == "html":
        print(render_html(report, lang))
    elif args.format == "markdown":
        print(render_markdown(report, lang))
    else:
        print(render_text(report, lang))
    if args.send:
        results = asyncio.run(send_report(cfg, report, lang))
        for name, outcome in results.items():
            print(f"{name}: {outcome}", file=sys.stderr)
        if not results:
            print("no channel: set report.channels or a route that takes alertname=DailyReport", file=sys.stderr)
            return 1
        return 0 if all(x.startswith("delivered") for x in results.values()) else 1
    return 0
