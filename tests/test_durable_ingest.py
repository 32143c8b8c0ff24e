"""Exactly-once across collector restarts, stored history, late samples: against a real collector process."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from roomwatch.core.wire import Batch, EventRecord, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import ROOT, http_get, http_json, http_post, metric_value, write_yaml

T = "roomwatch_temperature_celsius"


def _push(c: CollectorHandle, batch: Batch, token: str = TOKENS["agent-a"]) -> tuple[int, dict]:
    batch.sent = int(time.time() * 1000)
    status, raw = http_post(c.url + "/api/v1/push", encode_batch(batch),
                            {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
    return status, json.loads(raw) if raw else {}


def _history(c: CollectorHandle, **params: str) -> tuple[int, dict]:
    status, body = http_get(c.url + "/api/v1/history?" + urllib.parse.urlencode(params))
    return status, json.loads(body)


def _restart(c: CollectorHandle, tmp_path: Path, sig: int) -> CollectorHandle:
    c.proc.kill(sig)
    c.proc.stop()
    return start_collector(tmp_path, listen=f"127.0.0.1:{c.port}")


@pytest.mark.peer
def test_dedup_survives_restart_and_kill(tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    now = int(time.time() * 1000)
    b = Batch("agent-a", 1000, [SampleRecord(T, {"device": "t"}, 21.0, now)], [])
    assert _push(c, b) == (200, {"accepted": 1, "duplicate": False})
    c = _restart(c, tmp_path, signal.SIGTERM)
    assert _push(c, b) == (200, {"accepted": 0, "duplicate": True})
    assert _push(c, Batch("agent-a", 1001, [SampleRecord(T, {"device": "t"}, 22.0, now + 1)], []))[1]["duplicate"] is False
    c = _restart(c, tmp_path, signal.SIGKILL)  # no goodbye: what was answered 200 is on disk
    for seq in (1000, 1001):
        assert _push(c, Batch("agent-a", seq, [SampleRecord(T, {"device": "t"}, 99.0, now)], []))[1]["duplicate"] is True
    # a replay is not counted again anywhere: the persistent ledger and the history agree
    c.proc.stop()
    db = sqlite3.connect(tmp_path / "collector.db")
    assert db.execute("SELECT batches, samples FROM ingest_agents WHERE agent = 'agent-a'").fetchone() == (2, 2)
    assert db.execute("SELECT COUNT(*) FROM history_samples").fetchone() == (2,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_history_keeps_original_timestamps_and_late_samples_stay_history(collector: CollectorHandle) -> None:
    now = int(time.time() * 1000)
    fresh = Batch("agent-a", 2, [SampleRecord(T, {"device": "t", "room": "r1"}, 30.0, now)], [])
    late = Batch("agent-a", 1, [SampleRecord(T, {"device": "t", "room": "r1"}, 20.0 + i, now - 600_000 + i * 10_000)
                                for i in range(5)],
                 [EventRecord("door_open", {"device": "d"}, now - 600_000, 1.0)])
    assert _push(collector, fresh)[0] == 200
    assert _push(collector, late)[0] == 200  # the backlog arrives after the present, as a spool sends it
    # /metrics shows the room's present, not the backlog's last value
    assert metric_value(collector.metrics(), T, device="t") == 30.0
    status, doc = _history(collector, metric=T, start=str(now / 1000 - 3600), end=str(now / 1000 + 1), device="t")
    assert status == 200
    (series,) = doc["series"]
    assert series["metric"] == T and series["labels"] == {"agent": "agent-a", "device": "t", "room": "r1"}
    expected = [[(now - 600_000 + i * 10_000) / 1000, 20.0 + i] for i in range(5)] + [[now / 1000, 30.0]]
    assert series["samples"] == expected
    # label filters and time windows narrow the answer; RFC 3339 works as well as Unix seconds
    assert _history(collector, metric=T, device="other")[1] == {"series": []}
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 300))
    assert len(_history(collector, metric=T, start=start)[1]["series"][0]["samples"]) == 1


@pytest.mark.peer
def test_history_refuses_bad_and_oversized_queries(tmp_path: Path) -> None:
    c = start_collector(tmp_path, history={"max_samples": 100})
    try:
        now = int(time.time() * 1000)
        assert _push(c, Batch("agent-a", 1, [SampleRecord(T, {"device": "t"}, float(i), now - i) for i in range(150)],
                              []))[0] == 200
        status, doc = _history(c, metric=T, start=str(now / 1000 - 60))
        assert status == 400 and "more than 100 samples" in doc["error"]
        for params, words in (({}, "metric"), ({"metric": "bad name"}, "metric"), ({"metric": T, "start": "yesterday"},
                              "RFC 3339"), ({"metric": T, "start": "10", "end": "5"}, "after"),
                              ({"metric": T, "bad-label": "x"}, "label")):
            status, doc = _history(c, **params)
            assert status == 400 and words in doc["error"], (params, doc)
        assert c.proc.alive()
    finally:
        c.proc.stop()


@pytest.mark.peer
def test_history_can_be_turned_off_and_dedup_still_persists(tmp_path: Path) -> None:
    c = start_collector(tmp_path, history={"enabled": False})
    now = int(time.time() * 1000)
    assert _push(c, Batch("agent-a", 7, [SampleRecord(T, {"device": "t"}, 1.0, now)], []))[0] == 200
    assert _history(c, metric=T)[0] == 404
    c = _restart(c, tmp_path, signal.SIGKILL)
    assert _push(c, Batch("agent-a", 7, [SampleRecord(T, {"device": "t"}, 1.0, now)], []))[1]["duplicate"] is True
    agents = {a["id"]: a for a in http_json(c.url + "/api/v1/agents")["agents"]}
    assert agents["agent-a"]["up"] is True  # a replay still proves the agent is alive
    c.proc.stop()


@pytest.mark.peer
def test_unwritable_storage_is_a_clear_startup_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"listen": "127.0.0.1:0", "storage": str(tmp_path / "nope" / "c.db"),
                                            "agents": [{"id": "a", "token": "x" * 16}]})
    res = subprocess.run([sys.executable, "-m", "roomwatch", "collector", "-c", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert "cannot open the storage" in res.stderr and "does not exist" in res.stderr
