"""``roomwatch collector -c FILE``: serve the ingest API, /metrics and the API until stopped.

This module is the collector's composition root: :func:`build_app` builds the
alert service, connects it to the collector, and hands it and every part's routes
(login, alerts API, history, status page, report) to
:func:`~roomwatch.collector.http.create_app`. Nothing registers itself on import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import ssl
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roomwatch.core.configbase import ConfigError, iter_secret_values, parse_hostport, weak_secrets
from roomwatch.core.logsetup import setup_logging
from roomwatch.core.plural import plural
from roomwatch.core.sdnotify import Notifier

if TYPE_CHECKING:
    from aiohttp import web

    from roomwatch.alerts.service import AlertService
    from roomwatch.channels.base import Channel
    from roomwatch.collector.core import Collector

__all__ = ["build_alert_service", "build_app", "main", "serve"]

log = logging.getLogger("roomwatch.collector")


def build_alert_service(collector: Collector, clock: Callable[[], float] | None = None,
                        channels: dict[str, Channel] | None = None) -> AlertService:
    """The alert service of ``collector``'s config, listening to its ingest and adding to its /metrics."""
    from roomwatch.alerts.service import AlertService

    svc = AlertService(collector, clock=clock, channels=channels)
    collector.listeners.append(svc.on_ingest)
    collector.family_sources.append(svc.families)
    return svc


def build_app(collector: Collector, alerts: AlertService | None = None) -> web.Application:
    """The collector's HTTP app with every part: login, alerts API (and the alert service), history, page, report."""
    from roomwatch.alerts import api as alerts_api
    from roomwatch.collector import history, webauth
    from roomwatch.collector import web as status_page
    from roomwatch.collector.http import RouteSetup, create_app
    from roomwatch.collector.report import service as report

    svc = alerts if alerts is not None else build_alert_service(collector)
    routes: list[RouteSetup] = [webauth.add_routes,
              partial(alerts_api.add_routes, presenter=svc.presenter, commands=svc.commands, user_of=webauth.require_user),
              history.add_routes, status_page.add_routes, report.add_routes]
    if svc.ack_page is not None:  # one-tap acknowledge links: no login, the signed link is the credential
        from roomwatch.alerts import ackpage

        routes.append(partial(ackpage.add_routes, page=svc.ack_page))
    from roomwatch.alerts import imcallback

    routes.append(partial(imcallback.add_routes, callback=svc.dingtalk))  # a 404 unless alerts.callbacks.dingtalk
    return create_app(collector, alerts=svc, routes=routes)


def _ssl_context(cfg: object) -> ssl.SSLContext | None:
    tls = getattr(cfg, "tls", None)
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.load_verify_locations(tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _prepare_storage(cfg: Any) -> None:
    """Create the default storage directory when it is missing (a fresh host without the install script).

    An explicit ``storage:`` path is the user's to create. The default
    (``/var/lib/roomwatch``) is created here; without the permission to, a
    per-user state directory is used instead, said loudly, so that the
    smallest collector file of docs/api.md starts on a developer's machine too.
    """
    path = Path(cfg.storage)
    if cfg.storage == ":memory:" or path.parent.is_dir() or "storage" in cfg.model_fields_set:
        return
    try:
        path.parent.mkdir(mode=0o750, parents=True)
        log.info("created the storage directory %s", path.parent)
    except PermissionError:
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "roomwatch"
        state.mkdir(mode=0o750, parents=True, exist_ok=True)
        cfg.storage = str(state / path.name)
        log.warning("no permission to create %s: storing in %s instead (set storage: to choose)", path.parent, cfg.storage)


async def serve(config_path: str) -> int:
    """Run the collector of ``config_path`` until a stop signal; return the exit code."""
    from aiohttp import web

    from roomwatch.collector.config import load_collector_config
    from roomwatch.collector.core import Collector
    from roomwatch.collector.durable import Durable
    from roomwatch.collector.limits import RateLimitedLoopErrors, limit_connections, raise_nofile_limit

    cfg = load_collector_config(config_path)
    setup_logging(cfg.log_level, secrets=list(iter_secret_values(cfg)))
    # Out of descriptors, every failed accept() would log a traceback: one line a minute instead.
    asyncio.get_running_loop().set_exception_handler(RateLimitedLoopErrors())
    soft, _ = raise_nofile_limit()
    log.debug("open files limit %d", soft)
    for problem in weak_secrets(cfg):
        log.warning("%s", problem)
    _prepare_storage(cfg)
    collector = Collector(cfg)
    try:
        durable = Durable(collector)  # push dedup + history: a 200 means committed, so no store, no ingest
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open the storage %s: %s", cfg.storage, exc)
        return 1
    try:
        app = build_app(collector)
    except (OSError, sqlite3.Error) as exc:  # the storage directory does not exist; a store of a newer release
        log.error("cannot start: %s", exc)
        await durable.stop()
        return 1
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    limit_connections(runner.server, cfg.limits.connections_per_address)
    host, port = parse_hostport(cfg.listen)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=_ssl_context(cfg), reuse_address=True)
        await site.start()
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot listen on %s: %s", cfg.listen, getattr(exc, "strerror", None) or exc)
        await runner.cleanup()
        await durable.stop()
        return 1
    await collector.start()
    await durable.start()
    from roomwatch.collector.gcfreeze import freeze_while_growing

    freezer = asyncio.create_task(freeze_while_growing(lambda: len(collector.series)), name="gc-freeze")
    notifier = Notifier()
    notifier.ready(f"collector on {host}:{port}, {plural(len(cfg.agents), 'agent')}")
    notifier.start_watchdog()
    scheme = "https" if cfg.tls else "http"
    log.info("collector listening on %s://%s:%d (%s configured)", scheme, host, port, plural(len(cfg.agents), "agent"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notifier.stopping()
        freezer.cancel()
        await notifier.stop_watchdog()
        await collector.stop()
        await runner.cleanup()
        await durable.stop()
    return 0


def main(config_path: str) -> int:
    """Entry point used by the CLI."""
    setup_logging("info")
    try:
        return asyncio.run(serve(config_path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
