"""Imports every built-in channel module so it registers; adding a channel adds one line here."""

from roomwatch.channels import (  # noqa: F401
    alertmanager,
    aliyun_sms,
    aliyun_voice,
    dingtalk,
    feishu,
    gsm_call,
    gsm_modem,
    mail,
    serverchan,
    tencent_sms,
    tencent_voice,
    webhook,
    wecom_app,
    wecom_robot,
)
