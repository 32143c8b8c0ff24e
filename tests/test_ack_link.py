"""One-tap acknowledge links and the phone page (real HTTP on 127.0.0.1, the alert service on an injected clock):
the link is signed, bound to its episode, expiring, fragment-free; GET shows, POST acknowledges; refusals are
counted; an acknowledged alert stops repeating and escalating, and its resolution is told once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from roomwatch.alerts import ackpage
from roomwatch.alerts.acklink import AckLinks, LinkRefused
from tests.alert_harness import Harness
from tests.helpers import metric_value

EXTERNAL = "http://roomwatch.example:9640"
LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
SMOKE = {"site": "县政务中心", "room": "1号机房", "device": "smoke1"}


def harness(tmp_path: Path, **over: Any) -> Harness:
    conf: dict[str, Any] = {
        "alerts": {"external_url": EXTERNAL},
        "routes": [{"channels": ["duty"], "group_interval": "1s", "repeat_interval": "30m",
                    "levels": [{"after": "20s", "channels": ["chief"]}]}],
        **over,
    }
    return Harness(tmp_path, **conf)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Harness, ClientSession, str]]:
    h = harness(tmp_path)
    app = web.Application()
    assert h.svc.ack_page is not None
    ackpage.add_routes(app, h.svc.ack_page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession() as session:
        yield h, session, str(server.make_url("")).rstrip("/")
    await server.close()


def local(url: str, base: str) -> str:
    return url.replace(EXTERNAL, base)


async def test_link_in_every_message_and_the_page_flow(served: tuple[Harness, ClientSession, str]) -> None:
    h, session, base = served
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    [n] = h.queued()
    url = n.alerts[0].annotations["ack_url"]
    # the link: under external_url, says ack, no fragment, signed, in the text and the markdown too
    assert url.startswith(EXTERNAL + "/ack/") and "#" not in url and "ack" in url
    assert url in n.text and f"({url})" in n.markdown
    assert re.search(r"http://\S*ack\S*", n.text).group(0) == url  # type: ignore[union-attr]
    alert_id = h.alert("WaterLeak")["id"]  # type: ignore[index]
    q = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == f"/ack/{alert_id}" and q["c"] == ["duty"] and len(q["s"][0]) == 22

    # refused: another signature, another alert's id, no signature, expired → 403/404, counted
    good = local(url, base)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other = good.replace(alert_id, alert_id.split("-")[0] + "-999")
    for bad, status in ((forged, 403), (other, 403), (good.split("&s=")[0], 404)):
        async with session.get(bad) as r:
            assert r.status == status, (bad, r.status)
        async with session.post(bad) as r:
            assert r.status == status
    assert h.alert("WaterLeak")["acknowledged"] is False  # type: ignore[index]

    # GET (a link preview, a mail scanner, the person) shows the page and never acknowledges
    for _ in range(3):
        async with session.get(good) as r:
            page = await r.text()
            assert r.status == 200 and "机房漏水" in page and "县政务中心 / 1号机房 / leak1" in page
            assert 'method="post"' in page and r.headers["Referrer-Policy"] == "no-referrer"
    async with session.head(good) as r:
        assert r.status == 200
    assert h.alert("WaterLeak")["acknowledged"] is False  # type: ignore[index]

    # POST (the button) acknowledges, "via link", with the channel the link was sent through
    async with session.post(good) as r:
        assert r.status == 200 and "已确认" in await r.text()
    ack = h.alert("WaterLeak")["ack"]  # type: ignore[index]
    assert h.alert("WaterLeak")["acknowledged"] is True  # type: ignore[index]
    assert (ack["via"], ack["channel"], ack["by"]) == ("link", "duty", "link (duty)")
    async with session.post(good, headers={"Accept": "application/json"}) as r:  # again: fine, nothing changes
        assert r.status == 200 and (await r.json())["by"] == "link (duty)"

    # no escalation and no reminder follow; the resolution is told once, to the channel that was told
    h.advance(25)
    h.advance(31 * 60, step=10)
    assert h.queued() == []
    h.push([("roomwatch_water_leak_detected", LEAK, 0.0)])
    h.advance(2)
    assert [(x.receiver, x.reason) for x in h.queued()] == [("duty", "resolved")]
    h.advance(60)
    assert h.queued() == []
    async with session.get(good) as r:  # the episode is over
        assert r.status == 404

    families = {f.name: f for f in h.svc.families()}
    refused = dict(families["roomwatch_ack_links_refused_total"].samples)
    assert refused['{reason="bad_signature"}'] == 4.0 and refused['{reason="malformed"}'] == 2.0
    assert refused['{reason="gone"}'] == 1.0
    assert dict(families["roomwatch_acknowledgements_total"].samples) == {'{via="link"}': 1.0}


async def test_escalation_skips_the_acknowledged_alert_only(served: tuple[Harness, ClientSession, str]) -> None:
    h, session, base = served
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0), ("roomwatch_smoke_detected", SMOKE, 1.0)])
    [n] = h.queued()
    leak = next(a for a in n.alerts if a.labels["alertname"] == "WaterLeak")
    async with session.post(local(leak.annotations["ack_url"], base)) as r:
        assert r.status == 200
    h.advance(21)
    [esc] = h.queued()
    assert esc.receiver == "chief" and esc.reason == "escalation"
    assert [a.labels["alertname"] for a in esc.alerts] == ["SmokeDetected"]


def test_links_expire_and_bind_every_part() -> None:
    links = AckLinks(b"k" * 32, 86400.0, EXTERNAL)
    url = links.url("00000000000000aa-7", 1000.0, "sms", "李娜")
    path, query = urlsplit(url).path, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert path == "/ack/00000000000000aa-7" and query["p"] == "李娜"
    claim = links.verify("00000000000000aa-7", query, 1000.0 + 86400)
    assert (claim.channel, claim.person) == ("sms", "李娜")
    with pytest.raises(LinkRefused) as exc:
        links.verify("00000000000000aa-7", query, 1000.0 + 86401)
    assert (exc.value.status, exc.value.reason) == (403, "expired")
    for change in ({"p": "王强"}, {"c": "duty"}, {"e": str(int(query["e"]) + 3600)}):  # each part is signed
        with pytest.raises(LinkRefused) as exc:
            links.verify("00000000000000aa-7", {**query, **change}, 1000.0)
        assert exc.value.reason == "bad_signature"
    other = AckLinks(b"x" * 32, 86400.0, EXTERNAL)  # another collector's secret
    with pytest.raises(LinkRefused):
        other.verify("00000000000000aa-7", query, 1000.0)
    with pytest.raises(LinkRefused) as exc:
        links.verify("a" * 500, query, 1000.0)
    assert exc.value.status == 404
    assert "#" not in url and urlencode({"s": query["s"]}).endswith(query["s"])  # URL-safe signature


def test_secret_survives_a_restart_and_links_with_it(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    [n] = h.queued()
    url = n.alerts[0].annotations["ack_url"]
    h.restart()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert h.svc.ack_page is not None
    assert h.svc.ack_page.links.verify(urlsplit(url).path.rsplit("/", 1)[1], query, h.now).channel == "duty"


def test_repeat_queued_before_the_ack_is_not_sent_after_it(tmp_path: Path) -> None:
    h = harness(tmp_path, routes=[{"channels": ["duty"], "repeat_interval": "5m"}])
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    h.advance(5 * 60 + 1)
    reasons = [n.reason for n in h.queued()]
    assert reasons == ["firing", "repeat"]
    row = h.svc.store.conn.execute("SELECT payload FROM outbox WHERE reason = 'repeat'").fetchone()[0]
    from roomwatch.alerts.outbox import notification_from_json

    repeat = notification_from_json(row)
    assert h.svc.outbox.still_wanted("duty", repeat) is None
    h.svc.commands.ack(h.alert("WaterLeak")["id"], "张三")  # type: ignore[index]
    assert "acknowledged" in (h.svc.outbox.still_wanted("duty", repeat) or "")


def test_links_off_and_metrics_text(tmp_path: Path) -> None:
    h = harness(tmp_path, alerts={"external_url": EXTERNAL, "ack_links": {"enabled": False}})
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    [n] = h.queued()
    assert "ack_url" not in n.alerts[0].annotations and f"{EXTERNAL}/#/alerts/" in n.text  # the status page's link
    assert h.svc.ack_page is None
    from roomwatch.core.exposition import render_parts

    text = "".join(render_parts(h.svc.families(), "text/plain; version=0.0.4"))
    assert metric_value(text, "roomwatch_notifications_total", channel="duty", outcome="cancelled") == 0


async def test_links_work_under_read_access_login(tmp_path: Path) -> None:
    """web.read_access: login closes every read, but a one-tap link carries its own credential."""
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.core import Collector
    from roomwatch.collector.main import build_alert_service, build_app
    from roomwatch.collector.webauth import hash_password
    from tests.alert_harness import Clock

    cfg = CollectorConfig.model_validate({
        "storage": str(tmp_path / "c.db"), "agents": [{"id": "a1", "token": "t" * 20}],
        "channels": [{"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/duty"}],
        "routes": [{"channels": ["duty"]}], "alerts": {"external_url": EXTERNAL},
        "web": {"read_access": "login", "users": [{"name": "zhangsan", "password_hash": hash_password("x" * 12)}]}})
    collector = Collector(cfg)
    svc = build_alert_service(collector, clock=Clock())
    app = build_app(collector, svc)
    from roomwatch.core.wire import Batch, SampleRecord

    collector.ingest(collector.agents.agents["a1"], Batch("a1", 1, [SampleRecord(
        "roomwatch_water_leak_detected", dict(LEAK), 1.0, int(svc.clock() * 1000))], [], None), now=svc.clock())
    payload = svc.store.conn.execute("SELECT payload FROM outbox").fetchone()[0]
    import json

    url = json.loads(payload)["alerts"][0]["annotations"]["ack_url"]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            base = str(server.make_url("")).rstrip("/")
            async with session.get(base + "/api/v1/alerts") as r:
                assert r.status == 401
            async with session.get(local(url, base)) as r:
                assert r.status == 200
            async with session.post(local(url, base), data=b"x" * 100) as r:  # a body is never read, still fine
                assert r.status == 200
            async with session.post(local(url, base)[:-2] + "zz") as r:
                assert r.status == 403
        assert svc.engine.active and next(iter(svc.engine.active.values())).ack_via == "link"
    finally:
        await server.close()
