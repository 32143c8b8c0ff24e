"""Fuzzing (hypothesis): the push API of a real collector process and the config loader.

Whatever arrives, the answer is a clear 4xx (or 200 for a valid batch), never a
500, never a crash; a config file is accepted or refused with ConfigError, never
with a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import http_get

ALLOWED = {200, 400, 401, 403, 408, 413, 415}

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                          max_leaves=25)
NOW = int(time.time() * 1000)
FUZZ_PASSWORD = "fuzz-password-123"


def _valid() -> dict[str, Any]:
    return {"agent": "agent-a", "seq": 1, "sent": NOW,
            "samples": [{"metric": "roomwatch_temperature_celsius", "labels": {"device": "t"}, "value": 21.5, "ts": NOW}],
            "events": [{"type": "door_open", "labels": {"device": "d"}, "ts": NOW, "value": 1}]}


def _first_dict(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None


@st.composite
def mutated_batch(draw: st.DrawFn) -> dict[str, Any]:
    """A valid batch with a few random fields replaced: reaches deep into validation."""
    doc = _valid()
    doc["seq"] = draw(st.integers(min_value=1, max_value=2**62))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "sample", "labels", "event", "extra"]))
        value = draw(json_value)
        if where == "top":
            doc[draw(st.sampled_from(["agent", "seq", "sent", "samples", "events"]))] = value
        elif where in ("sample", "labels") and _first_dict(doc.get("samples")) is not None:
            sample = _first_dict(doc["samples"])
            if where == "sample":
                sample[draw(st.sampled_from(["metric", "labels", "value", "ts"]))] = value
            else:
                sample["labels"] = {draw(st.text(max_size=20)): value}
        elif where == "event" and _first_dict(doc.get("events")) is not None:
            _first_dict(doc["events"])[draw(st.sampled_from(["type", "labels", "ts", "value", "message"]))] = value
        else:
            doc[draw(st.text(max_size=10))] = value
    return doc


@pytest.fixture(scope="module")
def fuzz_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorHandle]:
    tmp = tmp_path_factory.mktemp("fuzz")
    from roomwatch.collector.webauth import hash_password

    c = start_collector(tmp, max_body="256KiB", max_body_decompressed="1MiB", body_timeout="2s",
                        rate_limit={"per_agent": 0, "per_address": 0},
                        web={"users": [{"name": "fuzz", "password_hash": hash_password(FUZZ_PASSWORD)}]})
    yield c
    log = c.proc.log()
    c.proc.stop()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]


def _send(c: CollectorHandle, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    try:
        conn.request("POST", "/api/v1/push", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _check(c: CollectorHandle, body: bytes, headers: dict[str, str]) -> None:
    status, raw = _send(c, body, headers)
    assert status in ALLOWED, (status, raw[:300])
    if status != 200:
        if raw.startswith(b"{"):
            doc = json.loads(raw)
            assert isinstance(doc.get("error"), str) and doc["error"], raw[:300]
        else:  # malformed HTTP refused by aiohttp's parser before our handler: its plain-text reason
            assert status == 400 and raw.strip(), raw[:300]


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


@_SETTINGS
@given(doc=mutated_batch(), gz=st.booleans())
def test_mutated_batches_get_200_or_a_clear_400(fuzz_collector: CollectorHandle, doc: dict[str, Any], gz: bool) -> None:
    raw = json.dumps(doc, allow_nan=True).encode()
    headers = {"Authorization": f"Bearer {TOKENS['agent-a']}", "Content-Type": "application/json"}
    if gz:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    _check(fuzz_collector, raw, headers)


@_SETTINGS
@given(body=st.one_of(st.binary(max_size=2000), json_value.map(lambda v: json.dumps(v, allow_nan=True).encode())),
       encoding=st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-garbage"]),
       wrap=st.sampled_from(["raw", "gzip", "zlib", "truncated-gzip"]),
       token=st.sampled_from([TOKENS["agent-a"], TOKENS["agent-b"], "", "x" * 300, "ünïcödé"]),
       scheme=st.sampled_from(["Bearer", "bearer", "Basic", ""]))
def test_arbitrary_bodies_and_headers_never_500(fuzz_collector: CollectorHandle, body: bytes, encoding: str | None,
                                                wrap: str, token: str, scheme: str) -> None:
    if wrap == "gzip":
        body = gzip.compress(body)
    elif wrap == "zlib":
        body = zlib.compress(body)
    elif wrap == "truncated-gzip":
        body = gzip.compress(body)[: max(1, len(body) // 2)]
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    auth = f"{scheme} {token}".strip()
    with contextlib.suppress(UnicodeEncodeError):
        auth.encode("latin-1")
        headers["Authorization"] = auth
    _check(fuzz_collector, body, headers)


# Times as people and scripts get them wrong: ms for s, overflow, far years, text, nonsense.
_times = st.one_of(st.none(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(allow_nan=False),
                   st.sampled_from([NOW, NOW / 1000, NOW / 1000 + 3600, 1e308, 2**63, "1e309", "-1e309"]),
                   st.datetimes().map(lambda d: d.isoformat() + "Z"), st.text(max_size=30))


def _silence_doc(draw_value: dict[str, Any]) -> bytes:
    text = json.dumps(draw_value, allow_nan=True)
    return text.replace('"1e309"', "1e309").replace('"-1e309"', "-1e309").encode()


@_SETTINGS
@given(starts=_times, ends=_times, duration=st.one_of(st.none(), st.sampled_from(["1h", "90d", "91d", "0s", "-1h",
                                                                                  "99999999999999d", "x"]),
                                                      st.text(max_size=12)),
       matchers=st.one_of(st.just(['alertname="WaterLeak"']), st.lists(st.text(max_size=30), max_size=3)),
       comment=st.one_of(st.just("maintenance"), st.text(max_size=20)))
def test_silence_parameters_get_200_or_a_clear_400(fuzz_collector: CollectorHandle, starts: Any, ends: Any,
                                                    duration: Any, matchers: Any, comment: Any) -> None:
    """Whatever times a silence names, the answer is 200 or a clear 400, and the list always answers."""
    import base64

    doc = {"matchers": matchers, "comment": comment}
    for key, value in (("startsAt", starts), ("endsAt", ends), ("duration", duration)):
        if value is not None:
            doc[key] = value
    auth = base64.b64encode(f"fuzz:{FUZZ_PASSWORD}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", fuzz_collector.port, timeout=10)
    try:
        conn.request("POST", "/api/v1/silences", body=_silence_doc(doc),
                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    finally:
        conn.close()
    assert status in (200, 400), (status, raw[:300])
    if status == 200:
        silence = json.loads(raw)["silence"]
        assert "2000-01-01" <= silence["startsAt"] < "2100" and silence["endsAt"] < "2100"
    listing_status, listing = http_get(fuzz_collector.url + "/api/v1/silences")
    assert listing_status == 200, listing[:300]


_params = st.one_of(st.text(max_size=20), st.sampled_from(["1e309", "nan", "-inf", "0", "4102444800", "9" * 400,
                                                          "2024-11-29T03:00:00Z", "9999-12-31T00:00:00Z", "5m", "0s"]))


@_SETTINGS
@given(params=st.dictionaries(st.sampled_from(["metric", "start", "end", "step", "room", "device", "x y", ""]),
                              _params, max_size=5))
def test_history_parameters_never_500(fuzz_collector: CollectorHandle, params: dict[str, str]) -> None:
    import urllib.parse

    query = urllib.parse.urlencode(params)
    status, raw = http_get(fuzz_collector.url + "/api/v1/history?" + query, timeout=30)
    assert status in (200, 400), (status, raw[:300])
    if status == 400:
        assert json.loads(raw)["error"]


def test_collector_still_serves_after_fuzzing(fuzz_collector: CollectorHandle) -> None:
    assert http_get(fuzz_collector.url + "/readyz")[0] == 200
    assert fuzz_collector.proc.alive()


# ------------------------------------------------------------------------------ the push decoder itself

@settings(max_examples=400, deadline=None)
@given(doc=mutated_batch(), surrogate=st.sampled_from(["", "\\ud800", "\\udfff", "\\ud83d\\ude00", "\\uD800x"]),
       where=st.sampled_from(["label", "metric", "message", "key", "agent"]))
def test_push_decoder_refuses_non_text_and_never_raises_else(doc: dict[str, Any], surrogate: str, where: str) -> None:
    """decode_batch either returns a batch whose every string is UTF-8 text, or raises WireError (the 400)."""
    from roomwatch.core.wire import WireError, decode_batch

    raw = json.dumps(doc, allow_nan=True)
    marker = "SURROGATE_HERE"
    sample = _first_dict(doc.get("samples"))
    event = _first_dict(doc.get("events"))
    if surrogate and where == "label" and sample is not None and isinstance(sample.get("labels"), dict):
        sample["labels"]["room"] = marker
    elif surrogate and where == "metric" and sample is not None:
        sample["metric"] = "roomwatch_" + marker
    elif surrogate and where == "message" and event is not None:
        event["message"] = marker
    elif surrogate and where == "key" and event is not None:
        event["labels"] = {marker: "x"}
    elif surrogate and where == "agent":
        doc["agent"] = marker
    raw = json.dumps(doc, allow_nan=True).replace(marker, surrogate)
    try:
        batch = decode_batch(raw.encode())
    except WireError:
        return
    for rec in (*batch.samples, *batch.events):
        json.dumps({"l": rec.labels, "m": getattr(rec, "metric", ""), "t": getattr(rec, "message", "")},
                   ensure_ascii=False).encode()
    batch.agent.encode()


# ------------------------------------------------------------------------------ config loader

_KEYS = ["agent", "collector", "devices", "host", "id", "listen", "spool", "spool_max_bytes", "urls", "token",
         "token_file", "token_hash", "push_interval", "backlog_rate", "tls", "ca_file", "insecure_skip_verify", "name",
         "driver", "interval", "timeout", "labels", "agents", "storage", "history", "retention", "remote_write", "url",
         "rate_limit", "per_agent", "channels", "routes", "type", "max_body", "idle_timeout", "enabled", "x-unknown"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.sampled_from(["10s", "5m", "0", "-1s", "1h30m", "64KiB", "bad", "${NOPE}", "${HOME}",
                                     "http://127.0.0.1:9640", "127.0.0.1:9640", "host", "sha256:" + "0" * 64,
                                     "/nonexistent/file", "", "\x00", "日本"]), st.text(max_size=20))
config_doc = st.recursive(_VALUES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6)),
                          max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(config_doc, st.dictionaries(st.sampled_from(_KEYS), config_doc, max_size=6)),
       raw=st.one_of(st.none(), st.text(max_size=200)))
def test_config_loader_never_crashes(tmp_path: Path, doc: Any, raw: str | None) -> None:
    from roomwatch.agent.config import load_agent_config
    from roomwatch.cli import main as cli_main
    from roomwatch.collector.config import load_collector_config
    from roomwatch.core.configbase import ConfigError

    path = tmp_path / "fuzz.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(doc, allow_unicode=True))
    for loader in (load_agent_config, load_collector_config):
        try:
            loader(str(path))
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), str(exc)  # every problem names the file (and line, key)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert cli_main(["check-config", str(path)]) in (0, 2)


def test_openapi_description_covers_every_route(tmp_path: Path) -> None:
    """docs/openapi.yaml describes every route the collector serves, with its methods, and no other."""
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.core import Collector
    from roomwatch.collector.main import build_app
    from roomwatch.core.wire import MAX_EVENTS, MAX_SAMPLES

    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_text())
    app = build_app(Collector(CollectorConfig(storage=str(tmp_path / "c.db"))))  # what `roomwatch collector` serves
    served = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}  # aiohttp adds HEAD to every GET
    documented = {(path, method) for path, item in doc["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert served - documented == set(), "served but not in docs/openapi.yaml"
    assert documented - served == set(), "in docs/openapi.yaml but not served"
    for path in ("/api/v1/push", "/api/v1/history", "/api/v1/alerts/{id}/ack", "/api/v1/silences", "/login"):
        assert path in doc["paths"], path
    for path, item in doc["paths"].items():  # path parameters are declared
        for name in (p.strip("{}") for p in path.split("/") if p.startswith("{")):
            for op in item.values():
                assert any(p.get("in") == "path" and p.get("name") == name for p in op.get("parameters", [])), (path, name)
    batch = doc["components"]["schemas"]["Batch"]["properties"]
    assert batch["samples"]["maxItems"] == MAX_SAMPLES and batch["events"]["maxItems"] == MAX_EVENTS
    assert set(doc["paths"]["/api/v1/push"]["post"]["responses"]) >= {"200", "400", "401", "403", "408", "413", "415",
                                                                       "429"}
    # Every route that takes a body says what the body guard answers (collector/limits.py), and its limit.
    from roomwatch.collector.limits import limits_of_handler

    for r in app.router.routes():
        if r.method in ("GET", "HEAD") or r.resource is None:
            continue
        op = doc["paths"][r.resource.canonical][r.method.lower()]
        limit = limits_of_handler(r.handler, r.method)
        assert {"413", "415"} <= set(op["responses"]), (r.resource.canonical, r.method)
        if not limit.raw:
            assert op.get("x-max-body") == limit.max_body, (r.resource.canonical, r.method, limit.max_body)
