"""Aliyun (阿里云) voice notification: Dyvmsapi SingleCallByTts, the RPC V2 (HMAC-SHA1) signature of the SMS API.

Docs: SingleCallByTts (help.aliyun.com/document_detail/393519), API error codes (help 178344,
"api-dyvmsapi-2017-05-25-errorcodes"), signature mechanism (help 56189; the same as
:mod:`roomwatch.channels.aliyun_sms`). A text-to-speech template approved in the console is read
to the called number, its variables filled from the notification, e.g. for
``${room}发生${alert}，请立即查看短信并处理。`` the default mapping below. Variables may not carry
links and must stay under 250 characters together.

One call per number and request (the API takes one ``CalledNumber``). Aliyun allows each
number 1 call a minute, 5 an hour and 20 a day (flow control counts failed calls too): the
channel keeps to that itself (:mod:`roomwatch.channels.pacing`), so a number over its limit
is retried alone when it may be called again. A resolution never rings anybody.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Literal

from pydantic import Field, field_validator

from roomwatch.channels.aliyun_sms import percent_encode, sign_v2
from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, render_params, validate_param_specs
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.pacing import NumberPace
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.core.configbase import Secret

__all__ = ["AliyunVoiceChannel", "AliyunVoiceConfig", "firing_only"]

#: Per called number (same qualification and purpose): 1/min, 5/h, 20/24 h (SingleCallByTts, CalledNumber).
NUMBER_LIMITS = ((1, 60.0), (5, 3600.0), (20, 86400.0))
#: Code → retry after seconds. Flow control says in its Message which window was hit.
RETRY_CODES: dict[str, float | None] = {
    "isv.BUSINESS_LIMIT_CONTROL": 60.0, "isp.SYSTEM_ERROR": None, "isp.GATEWAY_ERROR": None, "isp.UNKNOWN": None,
    "InternalError": None, "SignatureNonceUsed": None, "Throttling": 60.0, "Throttling.User": 60.0,
    "ServiceUnavailable": None, "isv.VOICE_CALL_FAIL": 60.0, "isv.VOICE_CALL_PERIOD_ERROR": 600.0,
    "isv.VOICE_ROBOT_NOT_PERIOD": 600.0,
}
#: Codes about one number only: that number is not called again, the others are.
NUMBER_CODES = {"isv.MOBILE_NUMBER_ILLEGAL", "isv.COMPLAINT_REJECT", "ComplaintReject"}
HINTS = {
    "InvalidAccessKeyId.NotFound": "the access_key_id is wrong",
    "SignatureDoesNotMatch": "the access_key_secret is wrong",
    "InvalidTimeStamp.Expired": "this server's clock is off by more than 15 minutes",
    "isp.RAM_PERMISSION_DENY": "the RAM user lacks the dyvms:SingleCallByTts permission",
    "isv.OUT_OF_SERVICE": "the account is suspended (overdue payment)",
    "isv.PRODUCT_UN_SUBSCRIPT": "the voice service is not activated for this account",
    "isv.PRODUCT_UNSUBSCRIBE": "the voice notification feature is not activated",
    "isv.TTS_TEMPLATE_ILLEGAL": "tts_code is not an approved text-to-speech template",
    "isv.TEMPLATE_ILLEGAL": "tts_code is not an approved template",
    "isv.TEMPLATE_MISSING_PARAMETERS": "tts_params lacks a variable of the template",
    "isv.TEMPLATE_PARAMS_ILLEGAL": "a variable has a word the service refuses",
    "isv.PARAM_NOT_SUPPORT_URL": "a variable carries a link (voice templates refuse links)",
    "isv.PARAM_LENGTH_LIMIT": "the variables are too long (under 250 characters together)",
    "isv.BLACK_KEY_CONTROL_LIMIT": "a variable has a blacklisted keyword",
    "isv.DISPLAY_NUMBER_ILLEGAL": "called_show_number is not a number of this account",
    "isv.AMOUNT_NOT_ENOUGH": "the account balance is too low",
    "isv.AMOUNT_NOT_ENOUG": "the account balance is too low",
    "isv.MOBILE_NUMBER_ILLEGAL": "the called number is not valid",
    "isv.COMPLAINT_REJECT": "calls to this number are blocked after complaints",
    "isv.VOICE_ROBOT_NOT_PERIOD": "the shared number pool does not call at this hour: use called_show_number",
}
CONCURRENCY = 8
#: All variables together must stay under this (SingleCallByTts, TtsParam).
PARAMS_TOTAL = 249


def firing_only(n: Notification) -> bool:
    """A notification a phone call is for: something fires (a call for a resolution, a daily report or
    heartbeat would wake people for nothing)."""
    return n.status == "firing" and n.reason not in ("report", "heartbeat") and any(a.status == "firing" for a in n.alerts)


class AliyunVoiceConfig(ChannelBase):
    """Aliyun voice: an AccessKey (a RAM user with AliyunDyvmsFullAccess) and an approved TTS template."""

    type: Literal["aliyun_voice"]
    send_resolved: bool = False  # a call is for what fires
    access_key_id: Secret
    access_key_secret: Secret
    #: Numbers to call; may be empty when the channel is used only through duty rotas (oncall: targets).
    phone_numbers: list[str] = Field(default_factory=list, max_length=100)
    tts_code: str = Field(pattern=r"^TTS_\d+$")
    #: Template variable → text from notification fields ({alert}, {room}, {site}, labels.X …); no links.
    tts_params: dict[str, str] = Field(default_factory=lambda: {"alert": "{alert}", "room": "{site}{room}"})
    param_max_chars: int = Field(default=40, ge=1, le=249)
    #: Caller number shown (专属模式: a number or service instance of the account); empty: the shared pool (公共模式).
    called_show_number: str = ""
    play_times: int = Field(default=3, ge=1, le=3)
    volume: int = Field(default=100, ge=0, le=100)
    speed: int = Field(default=0, ge=-500, le=500)
    region_id: str = "cn-hangzhou"
    endpoint: str = Field(default="https://dyvmsapi.aliyuncs.com/", pattern=r"^https?://")

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (digits, e.g. 13800138000)")
        return numbers

    @field_validator("tts_params")
    @classmethod
    def _params(cls, params: dict[str, str]) -> dict[str, str]:
        validate_param_specs(params.values())
        return params


def _local(number: str) -> str:
    """Aliyun's domestic voice wants the mainland number without +86."""
    digits = number.lstrip("+")
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


@register_channel
class AliyunVoiceChannel(HttpChannel):
    """One signed SingleCallByTts per number; ``Code`` ``OK`` (with a CallId) is a call placed."""

    type = "aliyun_voice"
    config_model = AliyunVoiceConfig
    person_key = "phone"
    calls = True
    max_bytes = None
    config: AliyunVoiceConfig

    def __init__(self, config: AliyunVoiceConfig):
        super().__init__(config)
        self.pace = NumberPace(NUMBER_LIMITS)

    def tts_param(self, n: Notification) -> str:
        """The template variables as JSON, links removed and cut to fit the service's total."""
        c = self.config
        values = [v.replace("http://", "").replace("https://", "")
                  for v in render_params(c.tts_params.values(), n, c.param_max_chars)]
        while sum(len(v) for v in values) > PARAMS_TOTAL:
            i = max(range(len(values)), key=lambda k: len(values[k]))
            values[i] = values[i][: max(1, len(values[i]) - 10)]
        return json.dumps(dict(zip(c.tts_params, values, strict=True)), ensure_ascii=False)

    def params(self, n: Notification, number: str, now: dt.datetime | None = None,
               nonce: str | None = None) -> dict[str, str]:
        """Every request parameter except the signature."""
        c = self.config
        now = now or dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        params = {
            "AccessKeyId": c.access_key_id.get_secret_value(), "Action": "SingleCallByTts", "CalledNumber": _local(number),
            "Format": "JSON", "PlayTimes": str(c.play_times), "RegionId": c.region_id, "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce or uuid.uuid4().hex, "SignatureVersion": "1.0",
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "TtsCode": c.tts_code, "TtsParam": self.tts_param(n),
            "Version": "2017-05-25", "Volume": str(c.volume), "Speed": str(c.speed),
        }
        if c.called_show_number:
            params["CalledShowNumber"] = c.called_show_number
        return params

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
                return SendResult(Outcome.RETRY, f"{number} was called recently (1/min, 5/h, 20/day)", wait)
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
        """One SingleCallByTts request for one number."""
        params = self.params(notification, number)
        params["Signature"] = sign_v2(params, self.config.access_key_secret.get_secret_value(), "POST")
        form = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
        reply = await self.call("POST", self.config.endpoint, data=form.encode(),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        """``Code: OK`` is a call placed; a number-only code fails that number for good; the rest by code."""
        data = reply.json()
        if not isinstance(data, dict) or "Code" not in data:
            return self.by_status(reply)
        code, msg = str(data["Code"]), str(data.get("Message", ""))
        if code == "OK":
            return SendResult(Outcome.DELIVERED, f"OK, CallId {data.get('CallId', '')}")
        detail = self.redact(f"{code}: {msg}" + (f" ({HINTS[code]})" if code in HINTS else ""))
        if code in RETRY_CODES or code.startswith("isp."):
            after = RETRY_CODES.get(code)
            if code == "isv.BUSINESS_LIMIT_CONTROL":
                after = 3600.0 if ("天级" in msg or "day" in msg.lower()) else 600.0 if (
                    "小时级" in msg or "hour" in msg.lower()) else 60.0
            return SendResult(Outcome.RETRY, detail, after)
        if reply.status >= 500:
            return SendResult(Outcome.RETRY, detail)
        return SendResult(Outcome.GIVE_UP, detail)
