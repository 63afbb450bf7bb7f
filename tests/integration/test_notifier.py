"""Notifications end to end: the engine and ``orderhub notify`` as processes on real Kafka, telling a
real SMTP server (the aiosmtpd mail sink), a real HTTP receiver and a real Mosquitto.

The webhook receiver below is written from the README's "Verifying a webhook" only: HMAC-SHA256
with the secret over ``<webhook-id>.<webhook-timestamp>.<body>``, base64, after ``v1,``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.client import HubClient
from hub.settings import PROJECT_DIR, Settings
from hub.streams.notify import READY
from localdev import mosquitto, process
from localdev.sandboxes import mailsink
from tests.domain_helpers import creation, proposal
from tests.integration.kafka_helpers import WorkerProcess, delete_namespace_topics, poll_until
from tests.services import namespaced_settings

pytestmark = pytest.mark.integration

SECRET = "notify-test-secret"


class Receiver:
    """An HTTP endpoint that checks each webhook's signature as the README says, answers 503 while
    ``down``, 410 on ``/gone``, and keeps what it acknowledged."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.down = False
        self.acknowledged: list[tuple[str, dict]] = []
        self.refused = 0
        self.forged = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                webhook_id, stamp = self.headers["webhook-id"], self.headers["webhook-timestamp"]
                signed = f"{webhook_id}.{stamp}.".encode() + body
                expected = base64.b64encode(hmac.new(receiver.secret, signed, hashlib.sha256).digest()).decode()
                given = [s.split(",", 1)[1] for s in self.headers["webhook-signature"].split() if s.startswith("v1,")]
                if not any(hmac.compare_digest(expected, s) for s in given):
                    receiver.forged += 1
                    status = 401
                elif self.path == "/gone":
                    status = 410
                elif receiver.down:
                    receiver.refused += 1
                    status = 503
                else:
                    receiver.acknowledged.append((webhook_id, json.loads(body)))
                    status = 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return namespaced_settings(kafka_settings, tmp_path)


@pytest.fixture
def mqtt_port(tmp_path: Path) -> Any:
    port = process.free_port()
    mosquitto.up(tmp_path / "broker", port)
    yield port
    mosquitto.down(tmp_path / "broker")


@pytest.fixture
def smtp_port(tmp_path: Path) -> Any:
    port = process.free_port()
    mailsink.up(tmp_path / "mail", port)
    yield port
    mailsink.down(tmp_path / "mail")


def workflow_file(path: Path, receiver: Receiver) -> Path:
    doc = yaml.safe_load((PROJECT_DIR / "workflow.yaml").read_text())
    doc["notifications"] = {"link": "http://127.0.0.1:8080/orders/{order_number}", "subscribers": [
        {"name": "sales-desk", "role": "sales_manager", "email": "sales@plant.example",
         "events": ["status_changed", "approval_waiting"]},
        {"name": "integration", "webhook": f"{receiver.url}/orderhub", "events": "all"},
        {"name": "gone", "webhook": f"{receiver.url}/gone", "events": ["status_changed"], "statuses": ["RELEASED"]},
        {"name": "hall-1", "mqtt": "orderhub/displays/hall-1", "events": ["status_changed"],
         "statuses": ["RELEASED", "IN_PRODUCTION"]},
    ]}
    path.write_text(yaml.safe_dump(doc))
    return path


async def display(port: int, seen: list[dict], subscribed: asyncio.Event) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"display-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe("orderhub/displays/hall-1", qos=1)
        subscribed.set()
        async for message in client.messages:
            seen.append(json.loads(message.payload))


def first_of_each(items: list[tuple[str, dict]]) -> list[dict]:
    """Each notification once, by id, in the order first seen (what a receiver that dedups keeps)."""
    found: dict[str, dict] = {}
    for notification_id, body in items:
        found.setdefault(notification_id, body)
    return list(found.values())


async def test_every_status_change_reaches_mail_webhook_and_mqtt_once_across_a_sigkill_and_a_receiver_outage(
        settings: Settings, tmp_path: Path, mqtt_port: int, smtp_port: int) -> None:
    order = f"O-{uuid.uuid4().hex[:8]}"
    with Receiver(SECRET) as receiver:
        env = {"ORDERHUB_WORKFLOW_FILE": str(workflow_file(tmp_path / "workflow.yaml", receiver)),
               "ORDERHUB_SMTP_PORT": str(smtp_port), "ORDERHUB_MQTT_PORT": str(mqtt_port),
               "ORDERHUB_WEBHOOK_SECRET": SECRET}
        engine = WorkerProcess(settings, tmp_path / "engine.log", env).start()
        notifier = WorkerProcess(settings, tmp_path / "notify.log", env, command=("notify",), ready_mark=READY)
        seen: list[dict] = []
        subscribed = asyncio.Event()
        screen = asyncio.create_task(display(mqtt_port, seen, subscribed))
        try:
            engine.wait_ready()
            notifier.start().wait_ready()
            await asyncio.wait_for(subscribed.wait(), 30)
            async with HubClient(settings) as client:
                async def step(event_id: str, changes: dict, base: int, system: str, role: str) -> None:
                    answer = (await client.propose(proposal(f"{order}-{event_id}", changes, base=base, system=system,
                                                            role=role, order_id=order), timeout_s=60)).answer
                    assert answer.outcome.value == "APPLIED", answer

                created = (await client.propose(creation(f"{order}-c", order_id=order), timeout_s=60)).answer
                assert created.outcome.value == "CREATED"
                await step("erp", {"amounts.gross": Decimal("12000.00"), "currency": "EUR", "status": "CONFIRMED"}, 1,
                           "ERP", "connector")
                await poll_until(lambda: len(receiver.acknowledged) >= 3, 60, "three webhooks acknowledged")

                receiver.down = True  # the integration's endpoint goes away for a while
                await step("sales", {"approvals.sales": {"decision": "approved"}}, 2, "HUB", "sales_manager")
                await poll_until(lambda: receiver.refused >= 2, 60, "the APPROVED webhook retried while refused")
                assert notifier.kill() == -9  # and the notifier dies mid-retry
                notifier.start().wait_ready()
                await step("release", {"status": "RELEASED"}, 3, "HUB", "planner")
                await step("start", {"status": "IN_PRODUCTION"}, 4, "MES", "connector")
                mails = await poll_until(lambda: _enough(mailsink.messages(tmp_path / "mail"), 6), 60,
                                         "six e-mails to the sales desk")
                await poll_until(lambda: len(first_of_each([(m["id"], m) for m in seen])) >= 2, 60,
                                 "two notifications on the display")
                receiver.down = False  # back: everything it missed arrives, once
                await poll_until(lambda: len(first_of_each(receiver.acknowledged)) >= 6, 60,
                                 "every notification at the integration")
                undeliverable = await poll_until(lambda: _listed(settings, env, "undeliverable"), 60,
                                                 "the 410 kept as undeliverable")
        finally:
            screen.cancel()
            notifier.stop()
            engine.stop()
            await delete_namespace_topics(settings, settings.topic_namespace)

    statuses = ["DRAFT", "CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION"]
    # the mail sink: one message per status change and the approval waiting, each notification id once
    by_id = {m["X-Orderhub-Notification-Id"]: m for m in mails}
    assert len(by_id) == len(mails) == 6, [m["Subject"] for m in mails]
    subjects = sorted(m["Subject"] for m in mails)
    assert subjects == sorted([f"[orderhub] {created.order_number} is now {s} (ACME GmbH)" for s in statuses] +
                              [f"[orderhub] {created.order_number} waits for your approval (sales)"])
    approved_mail = next(m for m in mails if "APPROVED" in m["Subject"])
    text = approved_mail.get_content()
    assert f"http://127.0.0.1:8080/orders/{created.order_number}" in text and "2026-12-01" in text
    assert "HUB" in text and "status: \"CONFIRMED\" -> \"APPROVED\"" in text

    # the webhook: signed (none forged), each id acknowledged exactly once, in the order the hub decided
    assert receiver.forged == 0
    ids = [notification_id for notification_id, _ in receiver.acknowledged]
    assert len(ids) == len(set(ids)) == 6, "acknowledged twice"
    assert [(b["kind"], b["order"]["status"]) for _, b in receiver.acknowledged] == [
        ("status_changed", "DRAFT"), ("status_changed", "CONFIRMED"), ("approval_waiting", "CONFIRMED"),
        ("status_changed", "APPROVED"), ("status_changed", "RELEASED"), ("status_changed", "IN_PRODUCTION")]
    approved = receiver.acknowledged[3][1]
    assert approved["by"]["system"] == "HUB" and approved["order"]["number"] == created.order_number
    assert approved["details"]["previous_status"] == "CONFIRMED"

    # MQTT: the display takes RELEASED and IN_PRODUCTION only
    assert [m["order"]["status"] for m in first_of_each([(m["id"], m) for m in seen])] == ["RELEASED", "IN_PRODUCTION"]
    # the endpoint that answered 410 is given up at once, with why, for an operator to see
    assert "gone" in undeliverable and "HTTP 410" in undeliverable


def _enough(mails: list, count: int) -> list | None:
    return mails if len(mails) >= count else None


def _listed(settings: Settings, env: dict[str, str], state: str) -> str | None:
    """``orderhub notifications --state <state>`` as an operator runs it; its output once it lists one."""
    out = subprocess.run([sys.executable, "-m", "hub.cli", "notifications", "--state", state], cwd=PROJECT_DIR,
                         env={**WorkerProcess(settings, Path("/dev/null"), env).env}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout if f"{state}: 1" in out.stdout else None
