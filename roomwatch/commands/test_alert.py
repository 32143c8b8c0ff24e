"""``roomwatch test-alert -c FILE --channel NAME``: one test notification through a configured channel.

The CLI imports this module to build its parser, so everything heavy is imported
inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="collector YAML file")
    p.add_argument("--channel", required=True, metavar="NAME", help="name of a channel in the file's channels list")
    # --lang like `roomwatch report`; --language kept for scripts written before.
    p.add_argument("--lang", "--language", dest="lang", choices=["zh-CN", "en"],
                   help="message language (default: alerts.language, else web.language)")


def run(args: argparse.Namespace) -> int:
    """Send one test notification; exit 0 delivered, 1 failed, 2 bad config or unknown channel."""
    import asyncio
    import datetime as dt
    import time

    from roomwatch.alerts.service import build_channels, default_external_url
    from roomwatch.alerts.templates import render_notification
    from roomwatch.channels.base import AlertItem, Notification, Outcome, SendResult
    from roomwatch.collector.config import load_collector_config
    from roomwatch.core.configbase import ConfigError, iter_secret_values
    from roomwatch.core.logsetup import setup_logging

    try:
        cfg = load_collector_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging("warning", secrets=list(iter_secret_values(cfg)))
    known = [c.name for c in cfg.channels]
    if args.channel not in known:
        print(f"{args.config}: no channel named {args.channel!r}; configured: {', '.join(known) or 'none'}",
              file=sys.stderr)
        return 2
    conf = next(c for c in cfg.channels if c.name == args.channel)
    channel = build_channels([conf])[conf.name]
    lang = args.lang or cfg.alerts.language or cfg.web.language
    from zoneinfo import ZoneInfo

    url = (cfg.alerts.external_url or default_external_url(cfg)).rstrip("/")
    title, text, markdown = render_notification([], status="firing", reason="test", lang=lang,
                                                tz=ZoneInfo(cfg.rules.timezone), external_url=url, now=time.time())
    now = dt.datetime.now(dt.UTC)
    item = AlertItem("0000000000000000", "firing", {"alertname": "RoomwatchTest", "severity": "info"},
                     {"summary": title, "description": text}, now, None, None, url)
    n = Notification("{}:{alertname=\"RoomwatchTest\"}", "firing", conf.name, [item], title, text, markdown,
                     {"alertname": "RoomwatchTest"}, dict(item.labels), dict(item.annotations), url, "test")

    async def send() -> SendResult:
        try:
            return await asyncio.wait_for(channel.send(n), conf.timeout + 5)
        finally:
            await channel.close()

    try:
        result = asyncio.run(send())
    except TimeoutError:
        print(f"{conf.name}: no result within {conf.timeout + 5:g}s", file=sys.stderr)
        return 1
    outcome = result.outcome
    print(f"{conf.name} ({conf.type}): {outcome.value}: {result.detail}")
    return 0 if outcome is Outcome.DELIVERED else 1
