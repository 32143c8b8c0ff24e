"""``roomwatch agent -c FILE``: load the config, run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from roomwatch.core.configbase import ConfigError, iter_secret_values, parse_hostport
from roomwatch.core.logsetup import setup_logging
from roomwatch.core.plural import plural
from roomwatch.core.sdnotify import Notifier

__all__ = ["main", "serve"]

log = logging.getLogger("roomwatch.agent")


async def serve(config_path: str) -> int:
    """Run the agent of ``config_path`` until a stop signal; return the exit code."""
    from roomwatch.agent.config import load_agent_config
    from roomwatch.agent.http import AgentHTTP
    from roomwatch.agent.runtime import Agent

    cfg = load_agent_config(config_path)
    secrets = list(iter_secret_values(cfg)) + (cfg.fallback.secret_values() if cfg.fallback is not None else [])
    setup_logging(cfg.agent.log_level, secrets=secrets)
    from roomwatch.agent.spool import SpoolError

    try:
        agent = Agent(cfg)
    except SpoolError as exc:
        log.error("%s", exc)
        return 1
    http = None
    if cfg.agent.listen:
        host, port = parse_hostport(cfg.agent.listen)
        try:
            http = AgentHTTP(agent, host, port)
        except OSError as exc:
            log.error("cannot listen on %s: %s", cfg.agent.listen, exc.strerror or exc)
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from roomwatch.agent.traps import TrapListenError

    try:
        await agent.start()
    except TrapListenError as exc:  # traps.listen taken, or below 1024 without the capability
        log.error("%s", exc)
        await agent.stop()
        if http is not None:
            http.close()
        return 1
    except OSError as exc:  # the NUT server's address is taken or not ours
        log.error("cannot listen on %s (nut_server.listen): %s", cfg.nut_server.listen if cfg.nut_server else "?",
                  exc.strerror or exc)
        if http is not None:
            http.close()
        return 1
    if http is not None:
        # Served once the agent runs: /healthz answering means the NUT server is listening too.
        http.start()
        log.info("serving /metrics and /healthz on http://%s:%d", host, http.port)
    notifier = Notifier()
    notifier.ready(f"agent {cfg.agent.id}: {plural(len(cfg.all_devices()), 'device')}")
    notifier.start_watchdog()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notifier.stopping()
        await notifier.stop_watchdog()
        await agent.stop()
        if http is not None:
            http.stop()
    return 0


def main(config_path: str) -> int:
    """Entry point used by the CLI."""
    setup_logging("info")
    try:
        return asyncio.run(serve(config_path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
