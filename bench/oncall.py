"""On call (issue 14): what one-tap links, reply codes and duty rotas cost per message, and a rota lookup.

    python -m bench.oncall [--rounds N]

* **Rendering a message**: the same 10-alert group rendered and queued A/B/A/B by two in-process alert
  services: A with acknowledge links off and a plain channel; B with signed one-tap links,
  SMS reply codes (a modem channel with ``replies: true``: a code looked up or made in the
  store per alert, the recipients' last message recorded) and a rota target (the person on
  duty resolved for the message). The difference is what the on-call features add to each
  message; the anchor is A.
* **Who is on duty**: ``Rota.at`` for a daily rota counting every day, and for one counting
  working days of the calendar (holidays, 调休), one and five years after the rota's start
  (the working-day count is week arithmetic plus the calendar's exceptions).
* **A link**: making and verifying one signed link.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, table, versions, write_result

ROOM = {"site": "县政务中心", "room": "1号机房"}


def _service(tmp: Path, name: str, oncall: bool) -> Any:
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.core import Collector
    from roomwatch.collector.main import build_alert_service

    channels: list[dict[str, Any]] = [{"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/duty"}]
    conf: dict[str, Any] = {"storage": str(tmp / f"{name}.db"), "agents": [{"id": "a1", "token": "t" * 20}],
                            "agent_timeout": "1h", "channels": channels, "routes": [{"channels": ["duty"]}],
                            "alerts": {"external_url": "http://10.1.2.3:9640", "ack_links": {"enabled": oncall}}}
    if oncall:
        channels.append({"name": "sms", "type": "gsm_modem", "port": "/dev/null-modem", "phone_numbers": ["+8613800000009"],
                         "replies": True, "check_interval": "0s"})
        conf["oncall"] = {"people": [{"name": n, "phone": f"1380000000{i}"} for i, n in enumerate(["张伟", "李娜", "王强"])],
                          "rotas": [{"name": "duty", "start": str(dt.date.today() - dt.timedelta(days=365)),
                                     "calendar": "working_days", "people": ["张伟", "李娜", "王强"], "channels": ["sms"]}]}
        conf["routes"] = [{"channels": ["duty", "oncall:duty"]}]
    c = Collector(CollectorConfig.model_validate(conf))
    return c, build_alert_service(c)


def render_ab(rounds: int) -> dict[str, Any]:
    from roomwatch.alerts.dispatch import Outgoing
    from roomwatch.core.wire import Batch, SampleRecord

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        svcs = {"A": _service(tmp, "a", False), "B": _service(tmp, "b", True)}
        outgoing: dict[str, Any] = {}
        for key, (col, svc) in svcs.items():
            now = time.time()
            samples = [SampleRecord("roomwatch_water_leak_detected", {**ROOM, "device": f"leak{i}"}, 1.0, int(now * 1000))
                       for i in range(10)]
            col.ingest(col.agents.agents["a1"], Batch("a1", 1, samples, [], int(now * 1000)), now=now)
            g = next(iter(svc.dispatcher.groups.values()))
            firing = sorted(svc.engine.active.values(), key=lambda a: a.fp)
            target = "sms@duty" if key == "B" else "duty"
            outgoing[key] = Outgoing(target, g, firing, [], "repeat", 0)
        times: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(rounds):
            for key in ("A", "B"):
                svc = svcs[key][1]
                o = outgoing[key]
                gc.collect()
                t0 = time.perf_counter()
                for _ in range(100):
                    with svc.store.transaction():  # as process() does: render and queue in one transaction
                        now = time.time()
                        svc.outbox.enqueue(o.channel.split("@")[0], svc.renderer.notification(o, now), now)
                times[key].append((time.perf_counter() - t0) / 100)
        for _, svc in svcs.values():
            svc.store.close()
    a, b = median(times["A"]) * 1e6, median(times["B"]) * 1e6
    return {"plain_us": a, "oncall_us": b, "added_us": b - a, "ratio": b / a, "rounds": rounds}


def rota_lookups(n: int) -> list[dict[str, Any]]:
    from roomwatch.alerts.rota import Rota, RotaConfig
    from roomwatch.alerts.timewindow import WorkingHours

    hours = WorkingHours.from_config(type("H", (), {"days": ["mon", "tue", "wed", "thu", "fri"], "start": dt.time(8, 30),
                                                    "end": dt.time(17, 30),
                                                    "holidays": [dt.date(2025, 10, d) for d in range(1, 9)],
                                                    "extra_workdays": [dt.date(2025, 9, 28)]})(), "Asia/Shanghai")
    out = []
    for calendar in ("every_day", "working_days"):
        for years in (1, 5):
            start = dt.date.today() - dt.timedelta(days=365 * years)
            rota = Rota(RotaConfig.model_validate({"name": "x", "start": str(start), "people": ["a", "b", "c"],
                                                   "channels": ["c"], "calendar": calendar}), "Asia/Shanghai", hours)
            now = time.time()
            t0 = time.perf_counter()
            for i in range(n):
                rota.at(now + i * 37.0)
            out.append({"calendar": calendar, "years": years, "us": (time.perf_counter() - t0) / n * 1e6})
    return out


def link_cost(n: int) -> dict[str, float]:
    from urllib.parse import parse_qs, urlsplit

    from roomwatch.alerts.acklink import AckLinks

    links = AckLinks(b"k" * 32, 86400.0, "http://10.1.2.3:9640")
    now = time.time()
    t0 = time.perf_counter()
    urls = [links.url(f"{i:016x}-{i}", now, "sms", "李娜") for i in range(n)]
    made = (time.perf_counter() - t0) / n * 1e6
    parsed = [(urlsplit(u).path.rsplit("/", 1)[1], {k: v[0] for k, v in parse_qs(urlsplit(u).query).items()}) for u in urls]
    t0 = time.perf_counter()
    for alert_id, q in parsed:
        links.verify(alert_id, q, now)
    return {"make_us": made, "verify_us": (time.perf_counter() - t0) / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 rounds (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 3)
    res: dict[str, Any] = {"versions": versions("pydantic", "aiohttp"), "render": render_ab(args.rounds),
                           "rota": rota_lookups(200 if args.quick else 2000), "link": link_cost(2000 if args.quick else 20000)}
    path = write_result("oncall", res)
    print(_tables(res))
    print(f"\nwrote {path}")


def _tables(res: dict[str, Any]) -> str:
    r = res["render"]
    render = table(["message of 10 alerts", "µs per message"],
                   [["A: links off, plain channel (anchor)", f"{r['plain_us']:.0f}"],
                    ["B: one-tap links + reply codes + rota target", f"{r['oncall_us']:.0f}"],
                    ["added by the on-call features", f"{r['added_us']:.0f} (×{r['ratio']:.2f})"]])
    rota = table(["rota", "years since start", "µs per lookup"],
                 [[x["calendar"], x["years"], f"{x['us']:.1f}"] for x in res["rota"]])
    link = table(["signed link", "µs"], [["make", f"{res['link']['make_us']:.1f}"],
                                         ["verify", f"{res['link']['verify_us']:.1f}"]])
    return "\n\n".join([render, rota, link])


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    return "\n".join([header(res, "On call: links, reply codes and rotas per message (issue 14)"), _tables(res), "",
                      f"Rendering: medians of {res['render']['rounds']} A/B rounds of 100 messages each, in one process, each "
                      "rendered and queued in one store transaction as the service does (B's reply codes and its "
                      "recipients' last message are store rows in the same transaction). Rota lookups: "
                      "one year and five years after the rota's start; the working-days calendar counts whole weeks plus "
                      "the calendar's holidays and 调休 days in the range, so a lookup stays flat over the years. "
                      "A message is rendered once per channel and person, so these costs are per notification, not per "
                      "sample."])


if __name__ == "__main__":
    main()
