"""The vendors' request-signing algorithms, written again for the test servers.

Kept apart from ``roomwatch.channels`` on purpose: a test server that verified with the
channel's own function would accept whatever that function got wrong. Both sides are
checked against the published vectors of CHANNELS.md (tests/test_channel_signing.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk: HMAC-SHA256 keyed by the secret over ``timestamp\\nsecret``, base64."""
    mac = hmac.new(secret.encode("utf-8"), (timestamp_ms + "\n" + secret).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu: HMAC-SHA256 keyed by ``timestamp\\nsecret`` over an empty message, base64."""
    mac = hmac.new((timestamp_s + "\n" + secret).encode("utf-8"), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def aliyun_pe(text: str) -> str:
    """RFC 3986 percent-encoding of UTF-8, byte by byte, uppercase hex."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def aliyun_v2(method: str, params: dict[str, str], secret: str) -> str:
    """Aliyun RPC signature V2 (HMAC-SHA1) over every parameter but Signature."""
    pairs = sorted((aliyun_pe(k), aliyun_pe(v)) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    to_sign = method.upper() + "&" + aliyun_pe("/") + "&" + aliyun_pe(canonical)
    return base64.b64encode(hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def tc3(secret_key: str, service: str, timestamp: int, method: str, path: str, query: str,
        headers: dict[str, str], signed: list[str], body: bytes) -> str:
    """Tencent Cloud TC3-HMAC-SHA256 signature (hex) from the request as received."""
    # Header names and values lowercased and trimmed (Signature v3, step 1).
    canon_headers = "".join(f"{h}:{headers[h].strip().lower()}\n" for h in signed)
    creq = "\n".join([method, path, query, canon_headers, ";".join(signed), hashlib.sha256(body).hexdigest()])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    sts = "\n".join(["TC3-HMAC-SHA256", str(timestamp), f"{date}/{service}/tc3_request",
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = ("TC3" + secret_key).encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
