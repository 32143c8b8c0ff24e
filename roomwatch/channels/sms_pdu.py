"""SMS-SUBMIT PDUs for AT+CMGS in PDU mode: GSM 7-bit when the text allows, UCS-2 otherwise,
long texts split into parts carrying a concatenation header (UDH ``05 00 03 ref total seq``).

Standards: 3GPP TS 23.040 (TPDU layout, §9.2.2.2 SMS-SUBMIT; §9.2.3.24.1 concatenation),
TS 23.038 (default alphabet and its extension table, UCS-2), TS 27.005 (AT+CMGS length = TPDU
octets without the SMSC part). Vectors: CHANNELS.md §7.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Part", "encode_address", "encode_sms", "fit_text", "gsm7_septets", "is_gsm7", "split_units"]

# TS 23.038 §6.2.1 default alphabet; index = septet value. 0x1B is the escape to the extension table.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}
_BASIC = {ch: i for i, ch in enumerate(GSM7_BASIC) if i != 0x1B}
assert len(GSM7_BASIC) == 128

#: Units per message: GSM 7-bit septets / UCS-2 code units, alone and in a concatenated part (6-octet UDH).
SINGLE = {"gsm7": 160, "ucs2": 70}
PART = {"gsm7": 153, "ucs2": 67}
DCS = {"gsm7": 0x00, "ucs2": 0x08}
VP_4_DAYS = 0xAA  # relative validity period (TS 23.040 §9.2.3.12.1): 0xAA = 4 days


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM default alphabet or its extension table."""
    return all(ch in _BASIC or ch in GSM7_EXT for ch in text)


def _char_units(ch: str, alphabet: str) -> list[int]:
    if alphabet == "gsm7":
        return [_BASIC[ch]] if ch in _BASIC else [0x1B, GSM7_EXT[ch]]
    code = ord(ch)
    if code < 0x10000:
        return [code]
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, two units that must stay in one part
    return [0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)]


def gsm7_septets(text: str) -> list[int]:
    """Septet values of ``text`` (extension characters take two)."""
    return [u for ch in text for u in _char_units(ch, "gsm7")]


def split_units(text: str, alphabet: str) -> list[list[int]]:
    """The text as one unit list, or as parts of 153 septets / 67 units, never splitting a character."""
    chars = [_char_units(ch, alphabet) for ch in text]
    if sum(len(c) for c in chars) <= SINGLE[alphabet]:
        return [[u for c in chars for u in c]]
    parts: list[list[int]] = [[]]
    for c in chars:
        if len(parts[-1]) + len(c) > PART[alphabet]:
            parts.append([])
        parts[-1].extend(c)
    return parts


def fit_text(text: str, max_parts: int) -> str:
    """Cut ``text`` so it needs at most ``max_parts`` messages, ending with an ellipsis when cut."""
    alphabet = "gsm7" if is_gsm7(text) else "ucs2"
    if len(split_units(text, alphabet)) <= max_parts:
        return text
    mark = "..." if alphabet == "gsm7" else "…"
    lo, hi = 0, len(text)  # longest prefix that fits with the mark
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(split_units(text[:mid] + mark, alphabet)) <= max_parts:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + mark


def encode_address(number: str) -> bytes:
    """Address field: digit count, type (0x91 international with ``+``, else 0x81), swapped BCD padded with F."""
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit():
        raise ValueError(f"{number!r} is not a phone number")
    toa = 0x91 if number.startswith("+") else 0x81
    padded = digits + ("F" if len(digits) % 2 else "")
    bcd = bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))
    return bytes([len(digits), toa]) + bcd


def _smsc_field(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"  # length 0: use the SMSC stored on the SIM
    addr = encode_address(smsc)[1:]  # the SMSC length counts octets (type + BCD), not digits
    return bytes([len(addr)]) + addr


def _pack_septets(septets: list[int], fill_bits: int) -> bytes:
    """Pack 7-bit values LSB first after ``fill_bits`` zero bits (TS 23.038 §6.1.2.1.1)."""
    acc, nbits, out = 0, fill_bits, bytearray()
    for s in septets:
        acc |= s << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Part:
    """One AT+CMGS exchange: ``AT+CMGS=<length>``, then ``pdu`` (hex, SMSC part first) and Ctrl-Z."""

    length: int  # TPDU octets, SMSC part excluded
    pdu: str
    seq: int = 1
    total: int = 1


def encode_sms(number: str, text: str, ref: int = 0, smsc: str | None = None) -> list[Part]:
    """SMS-SUBMIT PDUs for ``text`` to ``number``; ``ref`` (0–255) ties the parts of a long text together."""
    alphabet = "gsm7" if is_gsm7(text) else "ucs2"
    chunks = split_units(text, alphabet)
    total = len(chunks)
    if total > 255:
        raise ValueError("text too long for one concatenated SMS")
    head = _smsc_field(smsc)
    parts = []
    for seq, units in enumerate(chunks, 1):
        udh = bytes([5, 0, 3, ref & 0xFF, total, seq]) if total > 1 else b""
        if alphabet == "ucs2":
            ud = udh + b"".join(u.to_bytes(2, "big") for u in units)
            udl = len(ud)
        else:
            fill = (7 - len(udh) * 8 % 7) % 7
            ud = udh + _pack_septets(units, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(units)
        first = 0x11 | (0x40 if udh else 0)  # SMS-SUBMIT, relative validity period, UDHI when a header is there
        tpdu = (bytes([first, 0x00]) + encode_address(number) + bytes([0x00, DCS[alphabet], VP_4_DAYS, udl]) + ud)
        parts.append(Part(len(tpdu), (head + tpdu).hex().upper(), seq, total))
    return parts
