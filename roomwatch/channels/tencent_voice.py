"""Tencent Cloud (腾讯云) voice message: VMS SendTtsVoice, API 2020-09-02, signed with TC3-HMAC-SHA256.

Docs: SendTtsVoice (cloud.tencent.com/document/api/1128/51558), error codes (tencentcloud-sdk
``vms/v20200902/errorcodes.py``; API 3.0 common codes, document/api/1128/51566), frequency limits
(FAQ document/product/1128/38004), signature v3 (the same as :mod:`roomwatch.channels.tencent_sms`
with service ``vms``). A voice template approved in the console is read to the number, its
positional variables ({1}, {2}) filled from the notification; the text is at most 350 characters.

One call per number and request. The default frequency limits per called number for voice
notifications are 1 in 30 s, 2 in 10 minutes and 5 a day (and 1 between 22:00 and 08:00 unless
raised in the console): the channel keeps to the first three itself; a refusal
(``LimitExceeded.DeliveryFrequencyLimit``) is retried for that number after 10 minutes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from roomwatch.channels.aliyun_voice import firing_only
from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, render_params, validate_param_specs
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.pacing import NumberPace
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.channels.tencent_sms import CONTENT_TYPE, authorization
from roomwatch.core.configbase import Secret

__all__ = ["TencentVoiceChannel", "TencentVoiceConfig"]

NUMBER_LIMITS = ((1, 30.0), (2, 600.0), (5, 86400.0))
#: Codes (prefixes end with ".") → retry after seconds: frequency limits and Tencent-side faults.
RETRY_CODES: dict[str, float | None] = {
    "LimitExceeded.DeliveryFrequencyLimit": 600.0, "RequestLimitExceeded": 1.0, "RequestLimitExceeded.": 1.0,
    "InternalError.AccessUpstreamTimeout": None, "InternalError.UpstreamError": 30.0, "InternalError": None,
    "FailedOperation.AccessUpstreamTimeout": None, "FailedOperation.ParametersOtherError": 60.0,
    "LimitExceeded.": 600.0,
}
NUMBER_CODES = {"InvalidParameterValue.CalledNumberVerifyFail"}
HINTS = {
    "AuthFailure.SignatureFailure": "the secret_key is wrong",
    "AuthFailure.SecretIdNotFound": "the secret_id is wrong",
    "AuthFailure.SignatureExpire": "this server's clock is off by more than 5 minutes",
    "AuthFailure.UnauthorizedOperation": "the CAM user lacks QcloudVMSFullAccess",
    "FailedOperation.TemplateIncorrectOrUnapproved": "template_id is not approved, or the variables do not fit it",
    "FailedOperation.InsufficientBalanceInVoicePackage": "the voice package is used up",
    "FailedOperation.PhonenumberUnappliedOrExpired": "no voice number applied for, or it expired",
    "FailedOperation.ContainSensitiveWord": "the text has a word the service refuses",
    "InvalidParameterValue.ContentLengthLimit": "a variable is too long",
    "InvalidParameterValue.SdkAppidNotExist": "voice_sdk_app_id does not exist",
    "UnauthorizedOperation.VoiceSdkAppidVerifyFail": "voice_sdk_app_id does not belong to this account",
    "UnauthorizedOperation.SdkAppidIsDisabled": "the voice app is disabled",
    "UnauthorizedOperation.ServiceSuspendDueToArrears": "the account is suspended (overdue payment)",
    "InternalError.RequestTimeException": "this server's clock is off by more than 10 minutes",
    "InvalidParameterValue.CalledNumberVerifyFail": "the called number is not valid",
}
CONCURRENCY = 8


def _retry_after(code: str) -> tuple[bool, float | None]:
    if code in RETRY_CODES:
        return True, RETRY_CODES[code]
    for prefix, after in RETRY_CODES.items():
        if prefix.endswith(".") and code.startswith(prefix):
            return True, after
    return False, None


def e164(number: str) -> str:
    """+86 for an 11-digit mainland number, + for a number given with its country code."""
    return number if number.startswith("+") else f"+86{number}" if len(number) == 11 else f"+{number}"


class TencentVoiceConfig(ChannelBase):
    """Tencent Cloud voice message: an API key (CAM user with QcloudVMSFullAccess), a voice app and template."""

    type: Literal["tencent_voice"]
    send_resolved: bool = False
    secret_id: Secret
    secret_key: Secret
    voice_sdk_app_id: str = Field(pattern=r"^\d+$")
    template_id: str = Field(pattern=r"^\d+$")
    #: What fills {1}, {2}, … of the template, in order.
    template_params: list[str] = Field(default_factory=lambda: ["{site}{room}", "{alert}"])
    param_max_chars: int = Field(default=40, ge=1, le=350)
    #: E.164 numbers (+8613800138000; 11-digit mainland numbers get +86); may be empty for rota-only use.
    phone_numbers: list[str] = Field(default_factory=list, max_length=100)
    play_times: int = Field(default=2, ge=1, le=3)
    region: str = "ap-guangzhou"
    endpoint: str = Field(default="https://vms.tencentcloudapi.com/", pattern=r"^https?://")

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (e.g. +8613800138000)")
        return [e164(n) for n in numbers]

    @field_validator("template_params")
    @classmethod
    def _params(cls, params: list[str]) -> list[str]:
        validate_param_specs(params)
        return params


@register_channel
class TencentVoiceChannel(HttpChannel):
    """SendTtsVoice per number; ``SendStatus.CallId`` is a call placed, ``Error.Code`` says why not."""

    type = "tencent_voice"
    config_model = TencentVoiceConfig
    person_key = "phone"
    calls = True
    max_bytes = None
    config: TencentVoiceConfig

    def __init__(self, config: TencentVoiceConfig):
        super().__init__(config)
        self.pace = NumberPace(NUMBER_LIMITS)

    def body(self, n: Notification, number: str) -> bytes:
        c = self.config
        return json.dumps({
            "TemplateId": c.template_id, "CalledNumber": e164(number), "VoiceSdkAppid": c.voice_sdk_app_id,
            "TemplateParamSet": render_params(c.template_params, n, c.param_max_chars), "PlayTimes": c.play_times,
        }, ensure_ascii=False, separators=(",", ":")).encode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        c = self.config
        host = urlsplit(c.endpoint).netloc
        ts = int(self.clock()) if timestamp is None else timestamp
        return {
            "Authorization": authorization(c.secret_id.get_secret_value(), c.secret_key.get_secret_value(), host, body, ts,
                                           service="vms"),
            "Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": "SendTtsVoice", "X-TC-Version": "2020-09-02",
            "X-TC-Timestamp": str(ts), "X-TC-Region": c.region,
        }

    async def send(self, notification: Notification) -> SendResult:
        if not firing_only(notification):
            return self.result(Outcome.DELIVERED, "nothing to call for: no firing alert")
        who = Recipients(notification, addressed(notification, "phone", self.config.phone_numbers))
        if not who.pending and not who.reached:
            return self.result(Outcome.GIVE_UP, "no number to call (the person on duty has no phone)")
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(number: str) -> SendResult:
            wait = self.pace.wait(number, self.clock())
            if wait > 0:
                return SendResult(Outcome.RETRY, f"{number} was called recently (1/30 s, 2/10 min, 5/day)", wait)
            async with gate:
                self.pace.note(number, self.clock())
                return await self.call_one(notification, number)

        results = await asyncio.gather(*(one(num) for num in who.pending))
        reasons = {(r.outcome, r.detail) for r in results}
        if len(reasons) == 1 and results and results[0].outcome is not Outcome.DELIVERED and not (who.reached or who.missed):
            return self.result(results[0].outcome, results[0].detail, results[0].retry_after)
        ok = [num for num, r in zip(who.pending, results, strict=True) if r.outcome is Outcome.DELIVERED]
        failures = [Failure(num, r.detail, r.outcome is Outcome.RETRY, r.retry_after)
                    for num, r in zip(who.pending, results, strict=True) if r.outcome is not Outcome.DELIVERED]
        r = who.settle(ok, failures, self.log, self.name)
        return self.result(r.outcome, r.detail, r.retry_after, r.progress)

    async def call_one(self, notification: Notification, number: str) -> SendResult:
        body = self.body(notification, number)
        reply = await self.call("POST", self.config.endpoint, data=body, headers=self.headers(body))
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        data = reply.json()
        resp = data.get("Response") if isinstance(data, dict) else None
        if not isinstance(resp, dict):
            return self.by_status(reply)
        err = resp.get("Error")
        if isinstance(err, dict):
            code = str(err.get("Code", ""))
            detail = self.redact(f"{code}: {err.get('Message', '')}" + (f" ({HINTS[code]})" if code in HINTS else ""))
            retry, after = _retry_after(code)
            return SendResult(Outcome.RETRY if retry else Outcome.GIVE_UP, detail, after)
        status = resp.get("SendStatus")
        if isinstance(status, dict) and status.get("CallId"):
            return SendResult(Outcome.DELIVERED, f"CallId {status['CallId']}")
        return SendResult(Outcome.GIVE_UP, f"no SendStatus.CallId in the reply: {reply.text(200)}")
