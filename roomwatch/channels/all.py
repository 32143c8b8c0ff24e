"""Imports every built-in channel module so it registers; adding a channel adds one line here."""

from roomwatch.channels import (  # noqa: F401
    alertmanager,
    aliyun_sms,
    dingtalk,
    feishu,
    gsm_modem,
    mail,
    serverchan,
    tencent_sms,
    webhook,
    wecom_app,
    wecom_robot,
)
