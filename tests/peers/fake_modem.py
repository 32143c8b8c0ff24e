"""A GSM modem on a pseudo-terminal that speaks AT in PDU mode and decodes every SMS-SUBMIT it gets.

No real modem can run in a test, so this one speaks the wire protocol (3GPP TS 27.005/27.007)
and checks what a modem and the network check: PDU mode set, the AT+CMGS length equal to the
TPDU octet count, a well-formed TPDU (address, DCS, UDL, concatenation header), Ctrl-Z at the
end. It answers ``OK``, ``> ``, ``+CMGS: <mr>`` or ``+CMS ERROR: <n>`` and can be scripted to fail.
The decoder here is written from the standard, independently of ``roomwatch.channels.sms_pdu``.

Also, as real modules (Quectel EC20/EC25, Huawei ME909, SIMCom SIM7600) do:

* voice calls: ``ATD<number>;`` (``OK`` at once; without the ``;`` it is a data call: ``NO CARRIER``),
  ``AT+CLCC`` listing the call as ``+CLCC: 1,0,<stat>,0,0,"<number>",<type>`` (2 dialing, 3 alerting,
  0 active), ``ATH``/``AT+CHUP`` hanging up, and the callee's side scripted by :attr:`FakeModem.call_mode`
  (the state moves on with each ``AT+CLCC`` poll, so a test needs no clock);
* ``AT+CSQ`` (``+CSQ: <rssi>,<ber>``), ``AT+CNMI``;
* received SMS: :meth:`FakeModem.deliver` stores an SMS-DELIVER PDU (encoded here from TS 23.040,
  independently of roomwatch) and sends ``+CMTI: "SM",<index>``; ``AT+CMGL=<stat>``, ``AT+CMGR=<index>``
  and ``AT+CMGD=<index>`` list, read and delete them in PDU mode.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from dataclasses import dataclass, field

# TS 23.038 default alphabet (index = septet) and extension table, for decoding.
_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
          "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}


class PduError(ValueError):
    pass


@dataclass
class Submit:
    """One decoded SMS-SUBMIT."""

    number: str
    dcs: int
    text: str
    tpdu_len: int
    ref: int | None = None
    total: int = 1
    seq: int = 1


def decode_submit(hexpdu: str) -> Submit:
    """Decode an SMS-SUBMIT PDU (SMSC part first) as a modem would; raise PduError when malformed."""
    try:
        data = bytes.fromhex(hexpdu)
    except ValueError:
        raise PduError("not hex") from None
    if not data:
        raise PduError("empty")
    tpdu = data[1 + data[0]:]
    try:
        first = tpdu[0]
        if first & 0x03 != 0x01:
            raise PduError("not an SMS-SUBMIT")
        vpf, udhi = (first >> 3) & 0x03, bool(first & 0x40)
        ndigits, toa = tpdu[2], tpdu[3]
        i = 4 + (ndigits + 1) // 2
        digits = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in tpdu[4:i])[:ndigits]
        if not digits.isdigit() or toa not in (0x81, 0x91, 0xA1):
            raise PduError("bad destination address")
        dcs = tpdu[i + 1]
        i += 2 + {0: 0, 2: 1, 1: 7, 3: 7}[vpf]
        udl, ud = tpdu[i], tpdu[i + 1:]
    except IndexError:
        raise PduError("truncated") from None
    ref, total, seq, hdr_octets = None, 1, 1, 0
    if udhi:
        hl = ud[0]
        hdr, hdr_octets = ud[1:1 + hl], 1 + hl
        j = 0
        while j < len(hdr):
            iei, ln = hdr[j], hdr[j + 1]
            if iei == 0x00 and ln == 3:
                ref, total, seq = hdr[j + 2], hdr[j + 3], hdr[j + 4]
            j += 2 + ln
        if not 1 <= seq <= total:
            raise PduError("bad concatenation header")
    if dcs == 0x08:
        if len(ud) != udl or (udl - hdr_octets) % 2:
            raise PduError("UCS2 UDL does not match the data")
        text = ud[hdr_octets:].decode("utf-16-be")
    elif dcs == 0x00:
        if len(ud) != (udl * 7 + 7) // 8:
            raise PduError("GSM7 UDL does not match the data")
        bits = int.from_bytes(ud, "little")
        septets = [(bits >> (7 * k)) & 0x7F for k in range(udl)]
        skip = (hdr_octets * 8 + 6) // 7  # header plus fill bits, in septets
        out, esc = [], False
        for s in septets[skip:]:
            if esc:
                out.append(_EXT.get(s, " "))
                esc = False
            elif s == 0x1B:
                esc = True
            else:
                out.append(_BASIC[s])
        text = "".join(out)
    else:
        raise PduError(f"unexpected DCS {dcs:#x}")
    return Submit(("+" if toa == 0x91 else "") + digits, dcs, text, len(tpdu), ref, total, seq)


def _gsm7_pack(text: str) -> tuple[bytes, int] | None:
    """GSM 7-bit septets of ``text`` packed LSB first (TS 23.038 §6.1.2.1.1), or None when it needs UCS-2."""
    septets: list[int] = []
    ext = {v: k for k, v in _EXT.items()}
    for ch in text:
        if ch in _BASIC and ch != "\x1b":
            septets.append(_BASIC.index(ch))
        elif ch in ext:
            septets += [0x1B, ext[ch]]
        else:
            return None
    bits = sum(s << (7 * i) for i, s in enumerate(septets))
    return bits.to_bytes((len(septets) * 7 + 7) // 8, "little"), len(septets)


def encode_deliver(sender: str, text: str, when: tuple[int, int, int, int, int, int] = (25, 10, 1, 3, 5, 0)) -> str:
    """An SMS-DELIVER TPDU (hex, SMSC part first) from ``sender``, as the network hands it to a modem."""
    digits = sender.lstrip("+")
    toa = 0x91 if sender.startswith("+") else 0x81
    padded = digits + ("F" if len(digits) % 2 else "")
    addr = bytes([len(digits), toa]) + bytes.fromhex("".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2)))
    packed = _gsm7_pack(text)
    if packed is not None:
        dcs, ud, udl = 0x00, packed[0], packed[1]
    else:
        dcs, ud = 0x08, text.encode("utf-16-be")
        udl = len(ud)
    scts = bytes(int(f"{v:02d}"[::-1], 16) for v in when) + bytes([0x23])  # +8 h in quarters, swapped
    tpdu = bytes([0x04]) + addr + bytes([0x00, dcs]) + scts + bytes([udl]) + ud  # MTI 00 deliver, MMS set
    smsc = bytes([0x08, 0x91]) + bytes.fromhex("683108200505F0")  # +8613800250500
    return (smsc + tpdu).hex().upper()


@dataclass
class FakeCall:
    """One outgoing voice call the modem placed."""

    number: str
    states: list[int] = field(default_factory=lambda: [2])  # +CLCC stat values it went through
    ended_by: str = ""  # ATH (we hung up), remote (the callee or the network), ""
    polls: int = 0


class FakeModem:
    """The modem end of a pty; ``path`` is the tty the channel opens. Scriptable failures below."""

    def __init__(self, pin: str = "1234", sim_locked: bool = False):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.pin = pin
        self.cpin = "SIM PIN" if sim_locked else "READY"
        self.creg = 1  # 1 home, 5 roaming, 2 searching, 0 not registered
        self.echo, self.pdu_mode = True, False
        self.cms_errors: list[int | None] = []  # scripted +CMGS answers: an error code, or None = success
        self.silent_cmgs = False  # take the PDU, never answer (network hang)
        self.mute = False  # answer nothing at all (modem hung, wrong port)
        self.urc = False  # interleave unsolicited result codes, as Huawei sticks do
        self.csq = (20, 99)  # rssi 0..31 (99 unknown), ber: -113 + 2 * rssi dBm
        #: what the called phone does: ring (until we hang up), answer, reject (BUSY), unreachable (NO CARRIER
        #: before it rings), busy (ATD answers BUSY)
        self.call_mode = "ring"
        self.calls: list[FakeCall] = []
        self.inbox: dict[int, list[str]] = {}  # index → [stat, pdu hex]; stat "0" unread, "1" read
        self._next_index = 1
        self.commands: list[str] = []
        self.received: list[Submit] = []
        self.errors: list[str] = []  # protocol violations seen
        self._cmgs_len: int | None = None
        self._mr = 0
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-modem", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)

    def messages(self) -> dict[tuple[str, int | None], str]:
        """Reassembled texts by (number, ref); fails on a missing or duplicated part."""
        groups: dict[tuple[str, int | None], dict[int, Submit]] = {}
        for p in self.received:
            parts = groups.setdefault((p.number, p.ref), {})
            assert p.seq not in parts, f"part {p.seq} of ref {p.ref} to {p.number} arrived twice"
            parts[p.seq] = p
        out = {}
        for key, parts in groups.items():
            total = next(iter(parts.values())).total
            assert sorted(parts) == list(range(1, total + 1)), f"parts {sorted(parts)} of {total} for {key}"
            assert all(p.total == total for p in parts.values())
            out[key] = "".join(parts[s].text for s in sorted(parts))
        return out

    # ---------------------------------------------------------------- wire

    def _send(self, text: str) -> None:
        if not self.mute:
            os.write(self.master, text.encode())

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            self._buf += chunk
            self._process()

    def _process(self) -> None:
        while True:
            if self._cmgs_len is not None:  # collecting a PDU up to Ctrl-Z (or ESC to abort)
                end = min((i for i in (self._buf.find(b"\x1a"), self._buf.find(b"\x1b")) if i >= 0), default=-1)
                if end < 0:
                    return
                pdu, term, self._buf = self._buf[:end], self._buf[end:end + 1], self._buf[end + 1:]
                length, self._cmgs_len = self._cmgs_len, None
                if term == b"\x1b":
                    self._send("\r\nOK\r\n")
                else:
                    self._pdu(length, pdu.decode("ascii", errors="replace").strip())
                continue
            cr = self._buf.find(b"\r")
            if cr < 0:
                return
            raw, self._buf = self._buf[:cr], self._buf[cr + 1:]
            line = raw.decode("ascii", errors="replace").strip("\x1b\n \t")
            if line:
                self._command(line)

    def deliver(self, sender: str, text: str) -> int:
        """An SMS from ``sender`` arrives: stored in the SIM's memory, announced with +CMTI."""
        index = self._next_index
        self._next_index += 1
        self.inbox[index] = ["0", encode_deliver(sender, text)]
        self._send(f'\r\n+CMTI: "SM",{index}\r\n')
        return index

    def _call(self) -> FakeCall | None:
        return self.calls[-1] if self.calls and not self.calls[-1].ended_by else None

    def _clcc(self) -> None:
        call = self._call()
        if call is not None:
            call.polls += 1
            state = call.states[-1]
            nxt = state
            if self.call_mode == "unreachable" and call.polls >= 1:
                call.ended_by = "remote"
                self._send("\r\nNO CARRIER\r\n")
            elif state == 2:
                nxt = 3
            elif state == 3 and self.call_mode == "answer" and call.polls >= 2:
                nxt = 0
            elif state == 3 and self.call_mode == "reject" and call.polls >= 2:
                call.ended_by = "remote"
                self._send("\r\nBUSY\r\n")
            if not call.ended_by:
                if nxt != state:
                    call.states.append(nxt)
                toa = 145 if call.number.startswith("+") else 129
                self._send(f'\r\n+CLCC: 1,0,{call.states[-1]},0,0,"{call.number}",{toa}\r\n')
        self._ok()

    def _command(self, line: str) -> None:
        self.commands.append(line)
        if self.echo:
            self._send(line + "\r")
        up = line.upper()
        if self.urc:
            self._send("\r\n^RSSI: 21\r\n")
        if up == "AT":
            self._ok()
        elif up in ("ATE0", "ATE1"):
            self.echo = up == "ATE1"
            self._ok()
        elif up.startswith("AT+CMEE="):
            self._ok()
        elif up == "AT+CPIN?":
            self._send(f"\r\n+CPIN: {self.cpin}\r\n")
            self._ok()
        elif up.startswith("AT+CPIN="):
            if line.split("=", 1)[1].strip('"') == self.pin:
                self.cpin = "READY"
                self._ok()
            else:
                self._send("\r\n+CME ERROR: 16\r\n")  # incorrect password
        elif up in ("AT+CREG?", "AT+CEREG?"):
            self._send(f"\r\n{up[2:-1]}: 0,{self.creg}\r\n")
            self._ok()
        elif up.startswith("AT+CMGF="):
            self.pdu_mode = up.endswith("=0")
            self._ok()
        elif up == "AT+CSQ":
            self._send(f"\r\n+CSQ: {self.csq[0]},{self.csq[1]}\r\n")
            self._ok()
        elif up.startswith("AT+CNMI="):
            self._ok()
        elif up.startswith("ATD"):
            number = line[3:].strip()
            if not number.endswith(";"):
                self.errors.append(f"data call dialled: {line}")
                self._send("\r\nNO CARRIER\r\n")
            elif self.creg not in (1, 5) or self._call() is not None:
                self._send("\r\nNO CARRIER\r\n")
            elif self.call_mode == "busy":
                self._send("\r\nBUSY\r\n")
            else:
                self.calls.append(FakeCall(number[:-1]))
                self._ok()
        elif up == "AT+CLCC":
            self._clcc()
        elif up in ("ATH", "ATH0", "AT+CHUP"):
            call = self._call()
            if call is not None:
                call.ended_by = "ATH"
            self._ok()
        elif up.startswith("AT+CMGL="):
            if not self.pdu_mode:
                self._send("\r\n+CMS ERROR: 302\r\n")
                return
            want = up.split("=", 1)[1]
            for index, (stat, pdu) in sorted(self.inbox.items()):
                if want == "4" or want == stat:
                    smsc_len = int(pdu[:2], 16)
                    self._send(f"\r\n+CMGL: {index},{stat},,{len(pdu) // 2 - 1 - smsc_len}\r\n{pdu}")
                    self.inbox[index][0] = "1"
            self._send("\r\n")
            self._ok()
        elif up.startswith("AT+CMGR="):
            found = self.inbox.get(int(up.split("=", 1)[1] or 0))
            if found is None:
                self._send("\r\n+CMS ERROR: 321\r\n")  # invalid memory index
                return
            smsc_len = int(found[1][:2], 16)
            self._send(f"\r\n+CMGR: {found[0]},,{len(found[1]) // 2 - 1 - smsc_len}\r\n{found[1]}\r\n")
            found[0] = "1"
            self._ok()
        elif up.startswith("AT+CMGD="):
            index = int(up.split("=", 1)[1].split(",")[0] or 0)
            self.inbox.pop(index, None)
            self._ok()
        elif up.startswith("AT+CMGS="):
            arg = up.split("=", 1)[1]
            if not self.pdu_mode or not arg.isdigit():
                self.errors.append(f"CMGS outside PDU mode: {line}")
                self._send("\r\n+CMS ERROR: 302\r\n")
                return
            self._cmgs_len = int(arg)
            self._send("\r\n> ")
        else:
            self._send("\r\nERROR\r\n")

    def _ok(self) -> None:
        self._send("\r\nOK\r\n")

    def _pdu(self, length: int, hexpdu: str) -> None:
        try:
            sub = decode_submit(hexpdu)
        except PduError as exc:
            self.errors.append(f"bad PDU: {exc}")
            self._send("\r\n+CMS ERROR: 304\r\n")
            return
        if sub.tpdu_len != length:
            self.errors.append(f"AT+CMGS={length} but the TPDU has {sub.tpdu_len} octets")
            self._send("\r\n+CMS ERROR: 304\r\n")
            return
        scripted = self.cms_errors.pop(0) if self.cms_errors else None
        if self.silent_cmgs:
            return
        if scripted is not None:
            self._send(f"\r\n+CMS ERROR: {scripted}\r\n")
            return
        self.received.append(sub)
        self._mr = (self._mr + 1) % 256
        if self.urc:
            self._send("\r\n^RSSI: 20\r\n")
        self._send(f"\r\n+CMGS: {self._mr}\r\n\r\nOK\r\n")
