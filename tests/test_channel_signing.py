"""Request signing against the published vectors (CHANNELS.md): the channels' signers and the test servers' own."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from roomwatch.channels import aliyun_sms, dingtalk, feishu, tencent_sms
from tests.peers import vendor_sign

ALIYUN_PARAMS = {
    "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123", "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用", "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466", "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z", "Version": "2017-05-25",
}
ALIYUN_SIGNATURE = "zJDF+Lrzhj/ThnlvIToysFRq6t4="

# Tencent "Signature v3" example (CVM DescribeInstances); the \u escapes are literal ASCII in the body.
TC3_BODY = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
TC3_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
TC3_TS = 1551113065
TC3_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"

DINGTALK_SIGN = "drlICLmsjUfpSZSa7+mhIyTLZHQVqxb4vc20sB3aqQU="
FEISHU_SIGN = "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="


def test_aliyun_v2_vector() -> None:
    assert aliyun_sms.sign_v2(ALIYUN_PARAMS, "testSecret", "GET") == ALIYUN_SIGNATURE
    assert vendor_sign.aliyun_v2("GET", ALIYUN_PARAMS, "testSecret") == ALIYUN_SIGNATURE
    # In the URL the signature is percent-encoded once more.
    assert aliyun_sms.percent_encode(ALIYUN_SIGNATURE) == "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"
    # A Signature parameter already present is not part of what is signed.
    assert aliyun_sms.sign_v2({**ALIYUN_PARAMS, "Signature": "x"}, "testSecret", "GET") == ALIYUN_SIGNATURE
    # POST signs a different string: a GET signature must not pass for a POST.
    assert aliyun_sms.sign_v2(ALIYUN_PARAMS, "testSecret", "POST") != ALIYUN_SIGNATURE


def test_aliyun_percent_encoding_rules() -> None:
    """RFC 3986 with Aliyun's special cases: space %20, * %2A, ~ kept, uppercase hex, UTF-8."""
    for text in ("a b", "*", "~", "阿", "+/=", "-_."):
        assert aliyun_sms.percent_encode(text) == vendor_sign.aliyun_pe(text)
    assert aliyun_sms.percent_encode("a b*~") == "a%20b%2A~"


def test_tencent_tc3_vector() -> None:
    creq = tencent_sms.canonical_request("cvm.tencentcloudapi.com", TC3_BODY)
    assert hashlib.sha256(TC3_BODY).hexdigest().startswith("35e9c5b0")
    assert hashlib.sha256(creq.encode()).hexdigest().startswith("5ffe6a04")
    assert tencent_sms.tc3_signature(TC3_KEY, TC3_TS, "cvm", creq) == TC3_SIGNATURE
    headers = {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"}
    assert vendor_sign.tc3(TC3_KEY, "cvm", TC3_TS, "POST", "/", "", headers, ["content-type", "host"], TC3_BODY) \
        == TC3_SIGNATURE


def test_tencent_authorization_header_layout() -> None:
    auth = tencent_sms.authorization("AKIDEXAMPLE", TC3_KEY, "cvm.tencentcloudapi.com", TC3_BODY, TC3_TS, "cvm")
    assert auth == ("TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2019-02-25/cvm/tc3_request, "
                    f"SignedHeaders=content-type;host, Signature={TC3_SIGNATURE}")


def test_dingtalk_vector() -> None:
    assert dingtalk.sign("SECtest", 1577836800000) == DINGTALK_SIGN
    assert vendor_sign.dingtalk_sign("SECtest", "1577836800000") == DINGTALK_SIGN
    assert quote(DINGTALK_SIGN, safe="") == "drlICLmsjUfpSZSa7%2BmhIyTLZHQVqxb4vc20sB3aqQU%3D"


def test_feishu_vector() -> None:
    assert feishu.sign("demo", 1599360473) == FEISHU_SIGN
    assert vendor_sign.feishu_sign("demo", "1599360473") == FEISHU_SIGN
    # Not DingTalk's scheme (key and message swapped): the two must differ.
    assert feishu.sign("demo", 1599360473) != dingtalk.sign("demo", 1599360473)
