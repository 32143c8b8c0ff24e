"""The PDU encoder against the CHANNELS.md vectors, and round trips through the fake modem's own decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomwatch.channels.sms_pdu import encode_address, encode_sms, fit_text, is_gsm7, split_units
from tests.peers.fake_modem import decode_submit

CN = "+8613800138000"


def test_ucs2_vector() -> None:
    (part,) = encode_sms(CN, "机房告警")
    assert part.length == 23
    assert part.pdu == "0011000D91683108108300F00008AA08673A623F544A8B66"


def test_gsm7_vector() -> None:
    (part,) = encode_sms("+46708251358", "hellohello")
    assert part.length == 23
    assert part.pdu == "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"


def test_80_chinese_characters_split_67_13() -> None:
    text = "机" * 80
    p1, p2 = encode_sms(CN, text, ref=0x2A)
    assert p1.pdu.startswith("0051000D91683108108300F00008AA8C0500032A0201673A") and p1.length == 155
    assert "AA200500032A0202" in p2.pdu and p2.length == 47
    d1, d2 = decode_submit(p1.pdu), decode_submit(p2.pdu)
    assert (len(d1.text), len(d2.text)) == (67, 13)
    assert (d1.ref, d1.total, d1.seq, d2.ref, d2.seq) == (0x2A, 2, 1, 0x2A, 2)


def test_boundaries() -> None:
    assert len(encode_sms(CN, "a" * 160)) == 1 and len(encode_sms(CN, "a" * 161)) == 2
    assert len(encode_sms(CN, "机" * 70)) == 1 and len(encode_sms(CN, "机" * 71)) == 2
    # An extension character takes two septets: 80 of them fill one message exactly.
    assert len(encode_sms(CN, "€" * 80)) == 1 and len(encode_sms(CN, "€" * 81)) == 2
    # A part never splits an escape sequence or a surrogate pair.
    for text, alphabet in (("a" * 152 + "€" * 5, "gsm7"), ("机" * 66 + "😀" * 3, "ucs2")):
        for chunk in split_units(text, alphabet)[:-1]:
            assert chunk[-1] != 0x1B and not 0xD800 <= chunk[-1] <= 0xDBFF


def test_alphabet_choice_and_address() -> None:
    assert is_gsm7("UPS on battery @ room 1 [ok] €5")
    assert not is_gsm7("机房") and not is_gsm7("`")  # backtick is not in the GSM alphabet
    assert encode_address("13800138000").hex().upper() == "0B813108108300F0"  # national: type 0x81
    with pytest.raises(ValueError):
        encode_address("+86-138")


def test_smsc_given() -> None:
    (part,) = encode_sms(CN, "机房告警", smsc="+8613800100500")
    assert part.pdu.startswith("0891" + "683108100005F0")  # 8 octets: type + 7 swapped-BCD octets
    assert part.length == 23  # the SMSC part is not counted by AT+CMGS
    assert decode_submit(part.pdu).text == "机房告警"


def test_fit_text_cuts_to_parts() -> None:
    long_cn = "一号机房温度过高" * 100
    cut = fit_text(long_cn, 2)
    assert cut.endswith("…") and len(split_units(cut, "ucs2")) == 2 and len(cut) == 134
    cut = fit_text("x" * 1000, 1)
    assert cut == "x" * 157 + "..."  # GSM text keeps GSM: the ellipsis is three dots
    assert fit_text("短", 1) == "短"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from("abcXYZ019 @£$_€[]{}~|^\\\n机房告警温度°C😀é"), min_size=1, max_size=400),
       st.integers(0, 255))
def test_round_trip(text: str, ref: int) -> None:
    parts = encode_sms(CN, text, ref)
    decoded = [decode_submit(p.pdu) for p in parts]
    assert all(d.tpdu_len == p.length for d, p in zip(decoded, parts, strict=True))
    assert "".join(d.text for d in decoded) == text
    if len(parts) > 1:
        assert {d.ref for d in decoded} == {ref} and [d.seq for d in decoded] == list(range(1, len(parts) + 1))
        assert all(d.total == len(parts) for d in decoded)
