"""Aliyun (阿里云) SMS: dysmsapi SendSms with the V2 (HMAC-SHA1) request signature.

Docs: SendSms (help.aliyun.com/document_detail/55284), signature mechanism (help 56189), error
codes and flow control (help 108293); CHANNELS.md §5. SMS text comes from an approved template:
the config maps each template variable to notification fields, e.g. for the template
``机房告警：${alert}，位置：${room}，当前值：${value}`` the default mapping below.

SendSms takes up to 1000 comma-separated numbers but answers with one ``Code`` for the
request, so a batch cannot say which number is over its flow control or invalid. The
channel sends one request per number instead: each number is judged on its own, a number
over its limit is retried alone, and an invalid one does not stop the others.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

from pydantic import Field, field_validator

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, render_params, validate_param_specs
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.core.configbase import Secret

__all__ = ["AliyunSmsChannel", "AliyunSmsConfig", "percent_encode", "sign_v2"]

#: Code → retry after seconds. Flow control (isv.BUSINESS_LIMIT_CONTROL) says in its Message whether the
#: minute, hour or day limit was hit; isp.* are Aliyun-side faults; a reused nonce is retried with a new one.
RETRY_CODES: dict[str, float | None] = {
    "isv.BUSINESS_LIMIT_CONTROL": 60.0, "isp.SYSTEM_ERROR": None, "SignatureNonceUsed": None, "Throttling": 60.0,
    "Throttling.User": 60.0, "ServiceUnavailable": None,
}
HINTS = {
    "InvalidAccessKeyId.NotFound": "the access_key_id is wrong",
    "SignatureDoesNotMatch": "the access_key_secret is wrong",
    "InvalidTimeStamp.Expired": "this server's clock is off by more than 15 minutes",
    "isv.SMS_SIGNATURE_ILLEGAL": "sign_name is not an approved signature",
    "isv.SMS_TEMPLATE_ILLEGAL": "template_code is not an approved template",
    "isv.TEMPLATE_MISSING_PARAMETERS": "template_params lacks a variable of the template",
    "isv.AMOUNT_NOT_ENOUGH": "the account balance is too low",
    "isv.MOBILE_NUMBER_ILLEGAL": "a phone number is not valid",
}
#: Requests in flight at once for one notification (the service allows 5000 QPS; a duty list is short).
CONCURRENCY = 20


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8 as Aliyun wants it: unreserved kept, space ``%20``, ``*`` ``%2A``, ``~`` kept."""
    return quote(value, safe="-_.~")


def sign_v2(params: Mapping[str, str], secret: str, method: str = "GET") -> str:
    """V2 signature: base64 HMAC-SHA1 over ``METHOD&%2F&pe(sorted canonical query)`` with key ``secret + "&"``."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature")
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunSmsConfig(ChannelBase):
    """Aliyun SMS: an AccessKey (a RAM user with AliyunDysmsFullAccess), an approved signature and template."""

    type: Literal["aliyun_sms"]
    access_key_id: Secret
    access_key_secret: Secret
    phone_numbers: list[str] = Field(min_length=1, max_length=1000)
    sign_name: str = Field(min_length=1)
    template_code: str = Field(pattern=r"^SMS_\d+$")
    #: Template variable → text filled from notification fields ({alert}, {room}, {value}, labels.X, …).
    template_params: dict[str, str] = Field(
        default_factory=lambda: {"alert": "{alert}", "room": "{site}{room}", "value": "{value}"})
    #: Longest value of one variable; Aliyun limits notification variables (35 characters for most kinds).
    param_max_chars: int | None = Field(default=35, ge=1)
    region_id: str = "cn-hangzhou"
    endpoint: str = Field(default="https://dysmsapi.aliyuncs.com/", pattern=r"^https?://")

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (digits, e.g. 13800138000)")
        return numbers

    @field_validator("template_params")
    @classmethod
    def _params(cls, params: dict[str, str]) -> dict[str, str]:
        validate_param_specs(params.values())
        return params


@register_channel
class AliyunSmsChannel(HttpChannel):
    """SendSms as a signed form POST, one number per request; ``Code`` ``OK`` is delivered to that number."""

    type = "aliyun_sms"
    config_model = AliyunSmsConfig
    #: Notification SMS: 50 per day per number per signature and template (flow control, help 108293).
    rate_limit = (50, 86400.0)
    max_bytes = None  # the template fixes the text; variables are cut to param_max_chars instead
    person_key = "phone"
    config: AliyunSmsConfig

    def params(self, n: Notification, now: dt.datetime | None = None, nonce: str | None = None,
               numbers: list[str] | None = None) -> dict[str, str]:
        """Every request parameter except the signature; ``numbers`` default to every configured number."""
        c = self.config
        numbers = c.phone_numbers if numbers is None else numbers
        values = render_params(c.template_params.values(), n, c.param_max_chars)
        now = now or dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        return {
            "AccessKeyId": c.access_key_id.get_secret_value(), "Action": "SendSms", "Format": "JSON",
            "PhoneNumbers": ",".join(numbers), "RegionId": c.region_id, "SignName": c.sign_name,
            "SignatureMethod": "HMAC-SHA1", "SignatureNonce": nonce or uuid.uuid4().hex, "SignatureVersion": "1.0",
            "TemplateCode": c.template_code,
            "TemplateParam": json.dumps(dict(zip(c.template_params, values, strict=True)), ensure_ascii=False),
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "Version": "2017-05-25",
        }

    async def send(self, notification: Notification) -> SendResult:
        who = Recipients(notification, addressed(notification, "phone", self.config.phone_numbers))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(number: str) -> SendResult:
            async with gate:
                return await self.send_to(notification, number)

        results = await asyncio.gather(*(one(num) for num in who.pending))
        reasons = {(r.outcome, r.detail) for r in results}
        if len(reasons) == 1 and results[0].outcome is not Outcome.DELIVERED and not (who.reached or who.missed):
            return results[0]  # the same answer for every number (a wrong key, Aliyun down): say it once
        ok = [num for num, r in zip(who.pending, results, strict=True) if r.outcome is Outcome.DELIVERED]
        failures = [Failure(num, r.detail, r.outcome is Outcome.RETRY, r.retry_after)
                    for num, r in zip(who.pending, results, strict=True) if r.outcome is not Outcome.DELIVERED]
        r = who.settle(ok, failures, self.log, self.name)
        return self.result(r.outcome, r.detail, r.retry_after, r.progress)

    async def send_to(self, notification: Notification, number: str) -> SendResult:
        """One SendSms request for one number."""
        params = self.params(notification, numbers=[number])
        params["Signature"] = sign_v2(params, self.config.access_key_secret.get_secret_value(), "POST")
        form = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
        reply = await self.call("POST", self.config.endpoint, data=form.encode(),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        """Anything but ``Code: OK`` is a failure, whatever the HTTP status."""
        data = reply.json()
        if not isinstance(data, dict) or "Code" not in data:
            return self.by_status(reply)
        code, msg = str(data["Code"]), str(data.get("Message", ""))
        if code == "OK":
            return self.result(Outcome.DELIVERED, f"OK, BizId {data.get('BizId', '')}")
        detail = f"{code}: {msg}" + (f" ({HINTS[code]})" if code in HINTS else "")
        if code in RETRY_CODES or code.startswith("isp."):
            after = RETRY_CODES.get(code)
            if code == "isv.BUSINESS_LIMIT_CONTROL":
                # e.g. "触发小时级流控Permits:5", "触发天级流控Permits:10"
                after = 3600.0 if "天级" in msg else 600.0 if "小时级" in msg else 60.0
            return self.result(Outcome.RETRY, detail, after)
        if reply.status >= 500:
            return self.result(Outcome.RETRY, detail)
        return self.result(Outcome.GIVE_UP, detail)
