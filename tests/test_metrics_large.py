"""/metrics of a collector holding more series than are rendered inline (the scrape renders in a thread)."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TOKENS, CollectorHandle
from tests.helpers import http_get, http_post

N = 6000  # above collector.http._RENDER_INLINE


def test_a_large_exposition_is_complete_and_parses(collector: CollectorHandle) -> None:
    ts = int(time.time() * 1000)
    samples = [{"metric": "roomwatch_temperature_celsius", "labels": {"device": f"th{i}", "room": "A"},
                "value": 20 + i / 1000, "ts": ts} for i in range(N)]
    half = N // 2  # two pushes: one may bring at most limits.new_series_per_push (5,000) new series
    for seq, part in ((1, samples[:half]), (2, samples[half:])):
        body = json.dumps({"agent": "agent-a", "seq": seq, "samples": part}).encode()
        status, reply = http_post(collector.url + "/api/v1/push", body, {"Authorization": f"Bearer {TOKENS['agent-a']}",
                                                                         "Content-Type": "application/json"})
        assert status == 200, reply
    for accept, ctype in ((None, "text/plain"), ("application/openmetrics-text; version=1.0.0", "application/openmetrics")):
        status, text = http_get(collector.url + "/metrics", headers={"Accept": accept} if accept else None)
        assert status == 200
        got = {s.labels["device"]: s.value for fam in text_string_to_metric_families(text.decode())
               for s in fam.samples if s.name == "roomwatch_temperature_celsius"}
        assert got == {f"th{i}": 20 + i / 1000 for i in range(N)}, ctype
