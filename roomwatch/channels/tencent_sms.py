"""Tencent Cloud (腾讯云) SMS: SendSms, API version 2021-01-11, signed with TC3-HMAC-SHA256.

Docs: cloud.tencent.com/document/product/382/55981 (SendSms), 382/52075 (error codes),
"Signature v3" (cloud.tencent.com/document/api/382/52071); CHANNELS.md §6. The template's
variables are positional ({1}, {2}, …): ``template_params`` lists what fills each, e.g. for
``机房告警：{1}，位置：{2}，当前值：{3}`` the default below.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, render_params, validate_param_specs
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.core.configbase import Secret

__all__ = ["TencentSmsChannel", "TencentSmsConfig", "authorization", "canonical_request", "tc3_signature"]

CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = "content-type;host"

#: Codes (prefixes end with ".") → retry after seconds: frequency limits and Tencent-side faults.
RETRY_CODES: dict[str, float | None] = {
    "RequestLimitExceeded": 1.0, "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0, "LimitExceeded.PhoneNumberDailyLimit": 3600.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 3600.0, "LimitExceeded.AppDailyLimit": 3600.0,
    "LimitExceeded.DeliveryFrequencyLimit": 60.0, "LimitExceeded.": 60.0, "RequestLimitExceeded.": 1.0,
    "InternalError.": None, "InternalError": None, "FailedOperation.FailResolvePacket": None,
}
HINTS = {
    "AuthFailure.SignatureFailure": "the secret_key is wrong",
    "AuthFailure.SecretIdNotFound": "the secret_id is wrong",
    "AuthFailure.SignatureExpire": "this server's clock is off by more than 5 minutes",
    "FailedOperation.SignatureIncorrectOrUnapproved": "sign_name is not an approved signature",
    "FailedOperation.TemplateIncorrectOrUnapproved": "template_id is not an approved template",
    "FailedOperation.InsufficientBalanceInSmsPackage": "the SMS package is used up",
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": "sdk_app_id does not belong to this account",
}


def canonical_request(host: str, body: bytes, content_type: str = CONTENT_TYPE) -> str:
    """Step 1: ``POST``, path ``/``, no query, the signed headers content-type and host, the body's SHA-256."""
    headers = f"content-type:{content_type}\nhost:{host}\n"
    return f"POST\n/\n\n{headers}\n{SIGNED_HEADERS}\n{hashlib.sha256(body).hexdigest()}"


def tc3_signature(secret_key: str, timestamp: int, service: str, creq: str) -> str:
    """Steps 2–3: string to sign over the canonical request, key derived date → service → tc3_request."""
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    scope = f"{date}/{service}/tc3_request"
    sts = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k_sign = mac(mac(mac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(k_sign, sts.encode(), hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int, service: str = "sms") -> str:
    """Step 4: the ``Authorization`` header value."""
    sig = tc3_signature(secret_key, timestamp, service, canonical_request(host, body))
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    return (f"TC3-HMAC-SHA256 Credential={secret_id}/{date}/{service}/tc3_request, "
            f"SignedHeaders={SIGNED_HEADERS}, Signature={sig}")


def _retry_after(code: str) -> tuple[bool, float | None]:
    if code in RETRY_CODES:
        return True, RETRY_CODES[code]
    for prefix, after in RETRY_CODES.items():
        if prefix.endswith(".") and code.startswith(prefix):
            return True, after
    return False, None


def _e164(num: str) -> str:
    return num if num.startswith("+") else f"+86{num}" if len(num) == 11 else f"+{num}"


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


class TencentSmsConfig(ChannelBase):
    """Tencent Cloud SMS: an API key (CAM sub-user with QcloudSMSFullAccess), SDK app, signature, template."""

    type: Literal["tencent_sms"]
    secret_id: Secret
    secret_key: Secret
    sdk_app_id: str = Field(pattern=r"^\d+$")
    sign_name: str = Field(min_length=1)
    template_id: str = Field(pattern=r"^\d+$")
    #: What fills {1}, {2}, … of the template, in order.
    template_params: list[str] = Field(default_factory=lambda: ["{alert}", "{site}{room}", "{value}"])
    #: Longest value of one variable (personal accounts: 12 characters; companies: no per-variable limit).
    param_max_chars: int | None = Field(default=None, ge=1)
    #: E.164 numbers (+8613800138000); 11-digit mainland numbers get +86. At most 200.
    phone_numbers: list[str] = Field(min_length=1, max_length=200)
    region: str = "ap-guangzhou"
    endpoint: str = Field(default="https://sms.tencentcloudapi.com/", pattern=r"^https?://")

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        out = []
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (e.g. +8613800138000)")
            out.append(_e164(num))
        return out

    @field_validator("template_params")
    @classmethod
    def _params(cls, params: list[str]) -> list[str]:
        validate_param_specs(params)
        return params


@register_channel
class TencentSmsChannel(HttpChannel):
    """SendSms; each number's ``Code`` is checked (a request can succeed for some numbers only), and a retry
    goes only to the numbers still missing it."""

    type = "tencent_sms"
    config_model = TencentSmsConfig
    #: Default frequency limit: 1 SMS per number in 30 s (then 5/h, 10/day; changeable in the console).
    rate_limit = (1, 30.0)
    max_bytes = None  # the template fixes the text (≤ 500 characters with variables)
    person_key = "phone"
    config: TencentSmsConfig

    def body(self, n: Notification, numbers: list[str] | None = None) -> bytes:
        """The SendSms request for ``numbers`` (default: every configured number)."""
        c = self.config
        return json.dumps({
            "PhoneNumberSet": c.phone_numbers if numbers is None else numbers, "SmsSdkAppId": c.sdk_app_id,
            "SignName": c.sign_name,
            "TemplateId": c.template_id, "TemplateParamSet": render_params(c.template_params, n, c.param_max_chars),
        }, ensure_ascii=False, separators=(",", ":")).encode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Signed headers for ``body``; Host is the endpoint's, as signed."""
        c = self.config
        host = urlsplit(c.endpoint).netloc
        ts = int(self.clock()) if timestamp is None else timestamp
        return {
            "Authorization": authorization(c.secret_id.get_secret_value(), c.secret_key.get_secret_value(), host, body, ts),
            "Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": "SendSms", "X-TC-Version": "2021-01-11",
            "X-TC-Timestamp": str(ts), "X-TC-Region": c.region,
        }

    async def send(self, notification: Notification) -> SendResult:
        # Only the numbers that do not have it yet: a retry after one number's own limit must not
        # send the others a second SMS.
        who = Recipients(notification, [_e164(p) for p in addressed(notification, "phone", self.config.phone_numbers)])
        if not who.pending:
            return self._settled(who, [], [])
        body = self.body(notification, who.pending)
        reply = await self.call("POST", self.config.endpoint, data=body, headers=self.headers(body))
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply, who)

    def judge(self, reply: HttpReply, who: Recipients) -> SendResult:
        """Each number has its own ``Code``: Ok numbers are done, the others retried or missed by their code."""
        data = reply.json()
        resp = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(resp, dict):
            return self.by_status(reply)
        if isinstance(resp.get("Error"), dict):  # the whole request was refused: nobody got it
            code = str(resp["Error"].get("Code"))
            retry, after = _retry_after(code)
            detail = self._reason(code, str(resp["Error"].get("Message", "")))
            return self.result(Outcome.RETRY if retry else Outcome.GIVE_UP, detail, after)
        statuses = resp.get("SendStatusSet") or []
        if not statuses:
            return self.result(Outcome.GIVE_UP, "empty SendStatusSet")
        # Match the reply's numbers to ours by digits, so progress always names configured numbers.
        ours = {_digits(p): p for p in who.pending}
        ok: list[str] = []
        failures: list[Failure] = []
        for s in statuses:
            code, num = str(s.get("Code", "")), str(s.get("PhoneNumber", ""))
            num = ours.pop(_digits(num), num)
            if code.lower() == "ok":
                ok.append(num)
                continue
            retry, after = _retry_after(code)
            failures.append(Failure(num, self._reason(code, str(s.get("Message", ""))), retry, after))
        # A number the reply does not mention may not have it: send it again rather than lose it.
        failures += [Failure(p, "no status in the reply", True) for p in ours.values()]
        return self._settled(who, ok, failures)

    def _settled(self, who: Recipients, ok: list[str], failures: list[Failure]) -> SendResult:
        r = who.settle(ok, failures, self.log, self.name)
        return self.result(r.outcome, r.detail, r.retry_after, r.progress)

    def _reason(self, code: str, msg: str) -> str:
        return self.redact(f"{code}: {msg}" + (f" ({HINTS[code]})" if code in HINTS else ""))

