"""SMS-SUBMIT PDUs for AT+CMGS in PDU mode: GSM 7-bit when the text allows, UCS-2 otherwise,
long texts split into parts carrying a concatenation header (UDH ``05 00 03 ref total seq``);
and the SMS-DELIVER PDUs ``AT+CMGL`` lists (replies to an alert SMS), decoded by :func:`decode_deliver`.

Standards: 3GPP TS 23.040 (TPDU layout, §9.2.2.2 SMS-SUBMIT; §9.2.3.24.1 concatenation),
TS 23.038 (default alphabet and its extension table, UCS-2), TS 27.005 (AT+CMGS length = TPDU
octets without the SMSC part). Vectors: CHANNELS.md §7.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Deliver", "Part", "decode_deliver", "encode_address", "encode_sms", "fit_text", "gsm7_septets", "is_gsm7",
           "split_units"]

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


# ------------------------------------------------------------------ received messages


@dataclass(frozen=True, slots=True)
class Deliver:
    """One received SMS (or one part of a long one)."""

    sender: str  # "+8613800138000" for an international address, else the digits as sent
    text: str
    ref: int | None = None  # concatenation reference, when this is a part
    total: int = 1
    seq: int = 1


def _unpack_septets(data: bytes, count: int, skip_bits: int) -> list[int]:
    bits = int.from_bytes(data, "little")
    return [(bits >> (skip_bits + 7 * k)) & 0x7F for k in range(count)]


def _gsm7_text(septets: list[int]) -> str:
    ext = {v: k for k, v in GSM7_EXT.items()}
    out, escape = [], False
    for s in septets:
        if escape:
            out.append(ext.get(s, " "))
            escape = False
        elif s == 0x1B:
            escape = True
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def decode_deliver(hexpdu: str) -> Deliver:
    """Decode an SMS-DELIVER PDU as ``AT+CMGL``/``AT+CMGR`` print it in PDU mode (SMSC part first).

    TS 23.040 §9.2.2.1: first octet (MTI 00, UDHI 0x40), originating address, PID, DCS,
    the 7-octet service-centre time stamp, UDL, UD. Raises ValueError when malformed.
    """
    try:
        data = bytes.fromhex(hexpdu.strip())
        tpdu = data[1 + data[0]:]
        first = tpdu[0]
        if first & 0x03 != 0x00:
            raise ValueError("not an SMS-DELIVER")
        ndigits, toa = tpdu[1], tpdu[2]
        i = 3 + (ndigits + 1) // 2
        raw = tpdu[3:i]
        if toa & 0x70 == 0x50:  # alphanumeric sender (a service name): septets
            sender = _gsm7_text(_unpack_septets(raw, ndigits * 4 // 7, 0))
        else:
            sender = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in raw)[:ndigits]
            if toa & 0x70 == 0x10:
                sender = "+" + sender
        dcs = tpdu[i + 1]
        udl, ud = tpdu[i + 9], tpdu[i + 10:]
    except (IndexError, ValueError) as exc:
        raise ValueError(f"malformed SMS-DELIVER PDU: {exc}") from None
    ref, total, seq, header = None, 1, 1, 0
    if first & 0x40 and ud:
        hl = ud[0]
        header = 1 + hl
        j = 1
        while j + 1 < min(header, len(ud)):
            iei, ln = ud[j], ud[j + 1]
            if iei == 0x00 and ln == 3 and j + 4 < len(ud):
                ref, total, seq = ud[j + 2], ud[j + 3], ud[j + 4]
            elif iei == 0x08 and ln == 4 and j + 5 < len(ud):
                ref, total, seq = (ud[j + 2] << 8) | ud[j + 3], ud[j + 4], ud[j + 5]
            j += 2 + ln
    alphabet = (dcs >> 2) & 0x03 if dcs & 0xC0 == 0x00 else 0 if dcs & 0xF0 == 0xF0 and not dcs & 0x04 else 1
    if alphabet == 2:  # UCS-2
        text = ud[header:udl].decode("utf-16-be", errors="replace")
    elif alphabet == 0:  # GSM 7-bit: the header and its fill bits come first
        skip = (header * 8 + 6) // 7
        text = _gsm7_text(_unpack_septets(ud, udl, 0)[skip:])
    else:  # 8-bit data: not a text anyone typed
        text = ud[header:udl].decode("latin-1")
    return Deliver(sender, text, ref, total, seq)
