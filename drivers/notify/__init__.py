"""Notices to customers (SMTP) and on-call alerts (Alertmanager v2, webhooks)."""

from .alertmanager import AlertmanagerClient, postable_alert, rfc3339
from .base import Delivery, NoticeSender, Notifier, SecretLike
from .httppost import HttpResult
from .notice import (
    Notice,
    figures_from_metrics,
    message_id_for,
    render_email,
    render_text,
    subject_for,
)
from .oncall import OnCall
from .smtp import SmtpNotifier
from .webhook import WebhookNotifier, alert_event

__all__ = [
    "AlertmanagerClient",
    "Delivery",
    "HttpResult",
    "Notice",
    "NoticeSender",
    "Notifier",
    "OnCall",
    "SecretLike",
    "SmtpNotifier",
    "WebhookNotifier",
    "alert_event",
    "figures_from_metrics",
    "message_id_for",
    "postable_alert",
    "render_email",
    "render_text",
    "rfc3339",
    "subject_for",
]
