"""Rendering a notification with the plant's templates, and sending it: e-mail (SMTP), signed
webhooks (HTTP POST), MQTT (shop-floor displays).

Templates are Jinja2 files, one per kind, ``<templates>/<language>/<kind>.txt.j2``: the first
line is the subject, the rest (after a blank line) the text. orderhub ships ``en`` and ``de``;
a plant points ``notifications.templates`` at a folder of its own.

Every channel carries the same JSON body (``body``): the notification id receivers dedup by, the
kind, the order (id, number, customer, due date, status, link), who did it, what changed, the
details, the subject and the text. Webhooks are signed as Standard Webhooks does it (README,
"Notifications"):

    webhook-id:        the notification id
    webhook-timestamp: seconds since the epoch, when this attempt was sent
    webhook-signature: v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>

where the key is the secret's UTF-8 bytes (or, for a secret written ``whsec_<base64>``, the
decoded bytes) and ``<body>`` the exact bytes of the request body.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import hmac
import json
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from hub.domain import notify
from hub.domain.fields import load_json
from hub.domain.notify import Notification, Notifications
from hub.errors import ConfigError

#: The templates orderhub ships.
SHIPPED_TEMPLATES = Path(__file__).parent / "templates"
#: Seconds one delivery attempt may take.
ATTEMPT_TIMEOUT_S = 10.0
#: Headers up to RFC 5322's 998 characters stay on one line: the standard library folds a subject
#: over 78 characters that starts with "[" whole onto a continuation line, which readers then show
#: with a leading space.
_MAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)


class DeliveryFailed(Exception):
    """An attempt failed; ``permanent``: no retry can change it (a 4xx that is not 408/429, an
    address the mail server refuses for good)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- rendering ----------------------------------------------------------------------------


class Renderer:
    """The plant's templates in its language, loaded once (a template missing or broken stops the start)."""

    def __init__(self, config: Notifications) -> None:
        import jinja2

        folder = Path(config.templates) if config.templates else SHIPPED_TEMPLATES
        language = folder / config.language
        if not language.is_dir():
            raise ConfigError(f"notifications: no templates for language {config.language!r} in {folder} "
                              f"(expected a folder {language})")
        self.config = config
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(language)), undefined=jinja2.StrictUndefined,
                                 keep_trailing_newline=True, autoescape=False)
        self._templates = {}
        for kind in notify.KINDS:
            try:
                self._templates[kind] = env.get_template(f"{kind}.txt.j2")
            except jinja2.TemplateError as exc:
                raise ConfigError(f"notifications: template {language / (kind + '.txt.j2')}: {exc}") from exc

    def message(self, notification: Notification) -> dict[str, Any]:
        """The stored message: subject, text, and the JSON body every channel carries."""
        notice = notification.notice
        order = notice.order
        body = {
            "id": notification.id,
            "kind": notice.kind,
            "at": notice.at.isoformat(),
            "summary": notice.summary,
            "order": {"id": notice.order_id, "number": notice.order_number,
                      "customer": load_json(order.get("customer.name")) or
                      load_json(order.get("customer.id")),
                      "due_date": notify.due_date(order), "status": notice.status,
                      "link": notify.link(self.config, notice)},
            "by": dict(notice.by),
            "changes": [{"field": f, "before": b, "after": a} for f, b, a in notice.changes],
            "details": dict(notice.details),
            "subscriber": notification.subscriber.name,
        }
        try:
            rendered = self._templates[notice.kind].render(**body)
        except Exception as exc:  # noqa: BLE001 - a plant's template failing on this notice: say so, send the rest
            rendered = f"{notice.summary}\n\n(template {notice.kind}.txt.j2 failed: {type(exc).__name__}: {exc})\n"
        subject, _, text = rendered.partition("\n")
        body["subject"] = " ".join(subject.split())  # one line, whatever a value held (a CR, a line separator)
        body["text"] = text.strip() + "\n"
        return body


# --- channels -----------------------------------------------------------------------------


def webhook_signature(secret: str, notification_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value (module docstring)."""
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{notification_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class Channels:
    """Sends a stored notification by its channel (one attempt; ``DeliveryFailed`` says why not)."""

    def __init__(self, *, smtp_host: str, smtp_port: int, smtp_from: str, mqtt_host: str, mqtt_port: int,
                 webhook_secret: str | None) -> None:
        import httpx

        self.smtp_host, self.smtp_port, self.smtp_from = smtp_host, smtp_port, smtp_from
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port
        self.webhook_secret = webhook_secret
        self._http = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S)

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, channel: str, target: str, notification_id: str, message: dict[str, Any]) -> None:
        sender = {"email": self._email, "webhook": self._webhook, "mqtt": self._mqtt}[channel]
        await sender(target, notification_id, message)

    async def _email(self, target: str, notification_id: str, message: dict[str, Any]) -> None:
        import aiosmtplib

        try:
            mail = EmailMessage(policy=_MAIL_POLICY)
            mail["From"], mail["To"], mail["Subject"] = self.smtp_from, target, message["subject"]
            mail["Message-ID"] = f"<{notification_id}@orderhub>"  # the same id on every attempt: clients dedup
            mail["X-Orderhub-Notification-Id"] = notification_id
            mail["X-Orderhub-Kind"] = message["kind"]
            if message.get("correlation_id"):
                mail["X-Orderhub-Correlation-Id"] = message["correlation_id"]
            mail.set_content(message["text"])
            data = mail.as_bytes(policy=_MAIL_POLICY)
        except (ValueError, TypeError) as exc:  # no retry makes a message that cannot be written right
            raise DeliveryFailed(f"the message cannot be written as an e-mail: {exc}", permanent=True) from exc
        try:
            # sent as bytes flattened by our policy (aiosmtplib would flatten it again with its own)
            await aiosmtplib.send(data, sender=self.smtp_from, recipients=[target], hostname=self.smtp_host,
                                  port=self.smtp_port, timeout=ATTEMPT_TIMEOUT_S, start_tls=False, use_tls=False)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(500 <= r.code < 600 for r in exc.recipients)
            raise DeliveryFailed(f"SMTP {self.smtp_host}:{self.smtp_port} refused {target}: {exc}",
                                 permanent=permanent) from exc
        except aiosmtplib.SMTPResponseException as exc:  # 5xx: refused for good; 4xx: try again
            raise DeliveryFailed(f"SMTP {self.smtp_host}:{self.smtp_port}: {exc.code} {exc.message}",
                                 permanent=500 <= exc.code < 600) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"SMTP {self.smtp_host}:{self.smtp_port}: {type(exc).__name__}: {exc}") from exc

    async def _webhook(self, target: str, notification_id: str, message: dict[str, Any]) -> None:
        import httpx

        if not self.webhook_secret:
            raise DeliveryFailed("no webhook secret (ORDERHUB_WEBHOOK_SECRET) to sign with", permanent=True)
        body = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": notification_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": webhook_signature(self.webhook_secret, notification_id, timestamp, body)}
        try:
            response = await self._http.post(target, content=body, headers=headers)
        except httpx.InvalidURL as exc:
            raise DeliveryFailed(f"POST {target}: not a URL: {exc}", permanent=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"POST {target}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429)
        raise DeliveryFailed(f"POST {target}: HTTP {response.status_code} {response.text[:200]}", permanent=permanent)

    async def _mqtt(self, target: str, notification_id: str, message: dict[str, Any]) -> None:
        import aiomqtt

        body = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
        try:
            async with aiomqtt.Client(self.mqtt_host, self.mqtt_port, identifier=f"orderhub-notify-{notification_id}",
                                      timeout=ATTEMPT_TIMEOUT_S) as client:
                await client.publish(target, body, qos=1)  # returns once the broker acknowledged it
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"MQTT {self.mqtt_host}:{self.mqtt_port} {target}: {type(exc).__name__}: {exc}") from exc
