"""Pure functions: wire format, exposition, seq ranges."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomwatch.collector.seqs import SeqTracker
from roomwatch.core.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    Family,
    format_value,
    render,
    render_labels,
    render_parts,
)
from roomwatch.core.wire import Batch, EventRecord, SampleRecord, WireError, decode_batch, encode_batch


def test_wire_roundtrip() -> None:
    b = Batch("a1", 5, [SampleRecord("roomwatch_door_open", {"device": "门1"}, 1.0, 1_700_000_000_000)],
              [EventRecord("door_open", {"device": "门1"}, 1_700_000_000_000, 1.0, "门已打开")], 1_700_000_000_500)
    import gzip

    for raw in (encode_batch(b, compress=False), gzip.decompress(encode_batch(b))):
        assert decode_batch(raw) == b


@pytest.mark.parametrize(("doc", "reason"), [
    ([], "body must be a JSON object"),
    ({"seq": 1}, "agent must be"),
    ({"agent": "a", "seq": "1"}, "seq must be"),
    ({"agent": "a", "seq": 1, "extra": 1}, "unknown field(s): extra"),
    ({"agent": "a", "seq": 1, "samples": {}}, "samples must be a list"),
    ({"agent": "a", "seq": 1, "samples": [{"metric": "node_load1", "value": 1, "ts": 1_700_000_000_000}]},
     "samples[0].metric must be a metric name starting with roomwatch_"),
    ({"agent": "a", "seq": 1, "samples": [{"metric": "roomwatch_x", "value": 1, "ts": -5}]},
     "samples[0].ts must be a Unix time in milliseconds"),  # 1970 itself is fine (a clock never set)
    ({"agent": "a", "seq": 1, "samples": [{"metric": "roomwatch_x", "value": 1, "ts": 1_700_000_000_000,
                                           "labels": {"__name__": "x"}}]}, "not a valid label name"),
    ({"agent": "a", "seq": 1, "samples": [{"metric": "roomwatch_x", "value": 1, "ts": 1_700_000_000_000,
                                           "labels": {"a": 1}}]}, "samples[0].labels.a must be a string"),
    ({"agent": "a", "seq": 1, "events": [{"type": "Door Open", "ts": 1_700_000_000_000}]}, "events[0].type"),
    # a trailing newline would end the /metrics line early: refused like any other bad character
    ({"agent": "a", "seq": 1, "samples": [{"metric": "roomwatch_x\n", "value": 1, "ts": 1_700_000_000_000}]},
     "samples[0].metric must be a metric name"),
    ({"agent": "a", "seq": 1, "samples": [{"metric": "roomwatch_x", "value": 1, "ts": 1_700_000_000_000,
                                           "labels": {"a\n": "v"}}]}, "not a valid label name"),
    ({"agent": "a\n", "seq": 1}, "agent must be"),
    ({"agent": "a", "seq": 1, "events": [{"type": "door_open\n", "ts": 1_700_000_000_000}]}, "events[0].type"),
])
def test_wire_rejects_with_reason(doc: object, reason: str) -> None:
    with pytest.raises(WireError) as err:
        decode_batch(json.dumps(doc).encode())
    assert reason in str(err.value)


def test_wire_rejects_nan_and_inf() -> None:
    for bad in ("NaN", "Infinity", "-Infinity", "1" + "0" * 400, "-1" + "0" * 400, "true", '"1"', "null"):
        sample = '{"metric":"roomwatch_x","value":' + bad + ',"ts":1700000000000}'
        raw = ('{"agent":"a","seq":1,"samples":[' + sample + "]}").encode()
        with pytest.raises(WireError, match="finite"):
            decode_batch(raw)
        event = '{"type":"door_open","value":' + bad + ',"ts":1700000000000}'
        if bad != "null":  # an event may have no value
            with pytest.raises(WireError, match=r"events\[0\].value must be a finite number"):
                decode_batch(('{"agent":"a","seq":1,"events":[' + event + "]}").encode())
    big = 10**300  # an integer still inside the float range is a value like any other
    raw = ('{"agent":"a","seq":1,"samples":[{"metric":"roomwatch_x","value":' + str(big) + ',"ts":1700000000000}]}')
    assert decode_batch(raw.encode()).samples[0].value == float(big)


@given(st.binary(max_size=400))
def test_wire_never_raises_anything_but_wireerror(raw: bytes) -> None:
    try:
        decode_batch(raw)
    except WireError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_wire_random_json(doc: object) -> None:
    for wrapped in (doc, {"agent": "a", "seq": 1, "samples": doc}, {"agent": "a", "seq": 1, "samples": [doc]}):
        try:
            decode_batch(json.dumps(wrapped).encode())
        except WireError:
            pass


def test_labels_render_sorted_escaped_and_drop_empty() -> None:
    assert render_labels({"b": 'say "hi"\n', "a": "x\\y", "c": ""}) == '{a="x\\\\y",b="say \\"hi\\"\\n"}'
    assert render_labels({}) == ""


def test_format_value() -> None:
    assert format_value(1.0) == "1"
    assert format_value(0.25) == "0.25"
    assert format_value(math.nan) == "NaN"
    assert format_value(-math.inf) == "-Inf"
    assert float(format_value(1e20)) == 1e20
    # Python ints (and bools) too: int.is_integer is missing before Python 3.12.
    assert [format_value(x) for x in (3, -7, 0, True, False)] == ["3", "-7", "0", "1", "0"]
    assert float(format_value(10**16)) == 1e16 and format_value(-(10**400)) == "-Inf"
    assert render([Family("roomwatch_x", "X.", "gauge", [('{a="1"}', 3)])]).decode().endswith('roomwatch_x{a="1"} 3\n')


def test_render_matches_prometheus_client_parser() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fams = [Family("roomwatch_x_total", "A counter.", "counter", [('{a="1"}', 3.0)]),
            Family("roomwatch_door_open", "Door.", "gauge", [('{device="d1"}', 1.0), ('{device="d2"}', 0.0)])]
    parsed = {f.name: f for f in text_string_to_metric_families(render(fams).decode())}
    assert parsed["roomwatch_x"].type == "counter"
    assert [s.value for s in parsed["roomwatch_door_open"].samples] == [1.0, 0.0]


def test_render_parts_join_to_render_in_both_formats() -> None:
    """A scrape served in pieces (the collector yields between them) is byte for byte one render."""
    fams = [Family("roomwatch_x_total", "A counter.", "counter", [(f'{{a="{i}"}}', float(i)) for i in range(10)]),
            Family("roomwatch_empty", "Nothing.", "gauge", []),
            Family("roomwatch_build_info", "Info.", "info", [('{version="1"}', 1.0)]),
            Family("roomwatch_door_open", "Door.", "gauge", [(f'{{device="d{i}"}}', float(i % 2)) for i in range(7)])]
    for ctype in (CONTENT_TYPE_TEXT, CONTENT_TYPE_OPENMETRICS):
        whole = render(fams, ctype)
        parts = list(render_parts(fams, ctype, chunk=3))
        assert "".join(parts).encode() == whole
        assert max(p.count("\n") for p in parts) <= 3  # no piece longer than the chunk (headers are 2 lines)
    assert render(fams).count(b"# HELP roomwatch_empty") == 0


def test_seq_tracker_ranges() -> None:
    t = SeqTracker()
    for s in [5, 3, 4, 10, 1, 2, 11, 9]:
        assert t.add(s)
    assert t.ranges() == [(1, 5), (9, 11)]
    assert not t.add(4) and 7 not in t and 10 in t
    assert t.add(6) and t.add(7) and t.add(8)
    assert t.ranges() == [(1, 11)]


def test_seq_tracker_is_bounded() -> None:
    t = SeqTracker(max_ranges=10)
    for s in range(0, 100, 2):
        t.add(s)
    assert len(t.ranges()) == 10 and 98 in t
