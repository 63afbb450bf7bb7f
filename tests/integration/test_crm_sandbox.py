"""The CRM side against the real Salesforce sandbox process over TLS: simple-salesforce calls,
signed change events pushed to a webhook, echo recognition, polling after a gap, restarts."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce, SalesforceExpiredSession, SalesforceMalformedRequest

from connectors.crm.client import CrmRecordRefused, CrmSessionRefused, CrmUnavailable, OpportunityClient
from connectors.crm.mapping import order_changes_for
from connectors.crm.webhook import (BadSignature, ChangeEvent, StaleWebhook, is_own_write, parse_change_event,
                                    verify)
from localdev import process
from localdev.sandboxes import salesforce
from localdev.sandboxes.salesforce import CrmSandbox, SalesDesk, line

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret"
CLIENT_ID = "orderhub"
WAIT_S = 20.0


@dataclass(frozen=True)
class Delivery:
    """One POST the webhook received."""

    body: bytes
    """The body, byte for byte."""
    headers: dict[str, str]
    """The request headers."""
    accepted: bool
    """Whether the webhook answered 2xx."""

    @property
    def event(self) -> ChangeEvent:
        """The change event in the body."""
        return parse_change_event(self.body)

    @property
    def timestamp(self) -> int:
        """The signed timestamp."""
        return int(self.headers["X-Orderhub-Timestamp"])


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that records every delivery and can refuse the next few."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.refuse_next = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._changed:
                    accepted = receiver.refuse_next <= 0
                    receiver.refuse_next -= 1
                    receiver.deliveries.append(Delivery(body, dict(self.headers), accepted))
                    receiver._changed.notify_all()
                self.send_response(204 if accepted else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/crm/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "WebhookReceiver":
        """Listen."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx, in arrival order."""
        with self._changed:
            return [d for d in self.deliveries if d.accepted]

    def wait_for(self, wanted: Callable[[ChangeEvent], bool], timeout: float = WAIT_S) -> Delivery:
        """The first accepted delivery whose event is ``wanted``, waiting for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((d for d in self.deliveries if d.accepted and wanted(d.event)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such event within {timeout} s; got "
                                         f"{[d.event.changed_fields for d in self.deliveries]}")
                self._changed.wait(left)


def about(record_id: str, *, change_type: str | None = None, field: str | None = None) -> Callable[[ChangeEvent], bool]:
    """A predicate for events about ``record_id`` (of ``change_type``, changing ``field``)."""
    return lambda e: (record_id in e.record_ids and (change_type is None or e.change_type == change_type)
                      and (field is None or field in e.changed_fields))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook endpoint for the test, stopped after it."""
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The test's state folder."""
    return tmp_path / "state"


@pytest.fixture
def sandbox(state_dir: Path, receiver: WebhookReceiver) -> Iterator[CrmSandbox]:
    """The sandbox process on a free port, pushing events to the receiver; stopped by PID after the test."""
    started = salesforce.up(state_dir, process.free_port(), webhook_urls=[receiver.url], webhook_secret=SECRET)
    yield started
    salesforce.down(state_dir)
    assert not process.alive(started.pid)


@pytest.fixture
def desk(sandbox: CrmSandbox) -> Iterator[SalesDesk]:
    """The sales person."""
    person = SalesDesk(sandbox.instance_url, sandbox.ca_file)
    yield person
    person.close()


@pytest.fixture
def client(sandbox: CrmSandbox) -> Iterator[OpportunityClient]:
    """The connector's client, quick to give up so failures stay fast."""
    crm = OpportunityClient(sandbox.instance_url, sandbox.session_id, client_id=CLIENT_ID, ca_file=sandbox.ca_file,
                            attempts=3, backoff_s=0.01)
    yield crm
    crm.close()


def raw_salesforce(sandbox: CrmSandbox, session_id: str | None = None) -> Salesforce:
    """simple-salesforce itself, trusting the sandbox's CA."""
    session = requests.Session()
    session.verify = str(sandbox.ca_file)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
    return Salesforce(instance_url=sandbox.instance_url, session_id=session_id or sandbox.session_id,
                      session=session, parse_float=Decimal)


def won_deal(desk: SalesDesk) -> str:
    """A sales person's new opportunity with two lines; its id."""
    made = desk.new_opportunity("ACME Maschinenbau GmbH", "ACME brackets 2027", contact="Jana Novak",
                                Description="coating: zinc 12 um", Requested_Delivery_Date__c="2027-01-15",
                                lines=[line("MAT-1", 250, unit="pcs", unit_price=12.5)])
    desk.add_line(made.opportunity_id, "MAT-2", 3, unit="kg", unit_price=1.1)
    return made.opportunity_id


def test_simple_salesforce_queries_gets_and_patches_over_tls(sandbox: CrmSandbox) -> None:
    """simple-salesforce creates, queries, reads and updates records over TLS, and unsupported SOQL is refused."""
    sf = raw_salesforce(sandbox)

    account_id = sf.Account.create({"Name": "ACME"})["id"]
    opp_id = sf.Opportunity.create({"Name": "Deal", "AccountId": account_id, "StageName": "Prospecting",
                                    "CloseDate": "2026-12-31", "Amount": 1000})["id"]
    status = sf.Opportunity.update(opp_id, {"Description": "two pallets"})
    found = sf.query(f"SELECT Id, Name, IsWon, Amount FROM Opportunity WHERE AccountId = '{account_id}' LIMIT 5")

    assert status == 204
    assert found["totalSize"] == 1 and found["records"][0]["Id"] == opp_id
    assert found["records"][0]["Amount"] == Decimal("1000.0") and found["records"][0]["IsWon"] is False
    assert sf.Opportunity.get(opp_id)["Description"] == "two pallets"
    with pytest.raises(SalesforceMalformedRequest) as unsupported:
        sf.query("SELECT Id FROM Opportunity WHERE Name LIKE 'De%'")
    assert unsupported.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as read_only:
        sf.Opportunity.update(opp_id, {"IsWon": True})
    assert read_only.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_a_wrong_session_is_refused(sandbox: CrmSandbox) -> None:
    """A wrong session id gets Salesforce's 401 INVALID_SESSION_ID, which the client reports as configuration."""
    with pytest.raises(SalesforceExpiredSession) as refused:
        raw_salesforce(sandbox, session_id="00D000000000001!wrong").query("SELECT Id FROM Account")
    assert refused.value.content[0]["errorCode"] == "INVALID_SESSION_ID"

    client = OpportunityClient(sandbox.instance_url, "wrong", ca_file=sandbox.ca_file, attempts=1)
    with pytest.raises(CrmSessionRefused):
        client.account("001000000000001AAA")


def test_a_won_opportunity_produces_a_signed_change_event(sandbox: CrmSandbox, desk: SalesDesk,
                                                          receiver: WebhookReceiver,
                                                          client: OpportunityClient) -> None:
    """Winning under a renamed stage pushes a signed UPDATE event with IsWon that verifies, parses and maps."""
    opp_id = won_deal(desk)

    desk.win(opp_id, stage="Signed")
    delivery = receiver.wait_for(about(opp_id, change_type="UPDATE", field="IsWon"))

    verify(delivery.body, delivery.headers, SECRET, now=dt.datetime.now(dt.timezone.utc))
    event = delivery.event
    assert (event.entity_name, event.values["IsWon"], event.values["StageName"]) == ("Opportunity", True, "Signed")
    assert not is_own_write(event, CLIENT_ID)
    opp = client.opportunity(event.record_id)
    lines = client.line_items(opp.id)
    changes = order_changes_for(opp, lines, client.account(opp.account_id), contact=client.contact(opp.contact_id))
    assert opp.is_won and opp.amount == Decimal("3128.3")
    assert changes["contact"] == "Jana Novak" and changes["requested_delivery"] == "2027-01-15"
    assert [changes["lines.10.material.id"], changes["lines.20.material.id"]] == ["MAT-1", "MAT-2"]
    assert changes["lines.20.unit"] == "KGM"


def test_the_hubs_own_write_back_is_recognised_by_its_change_origin(desk: SalesDesk, receiver: WebhookReceiver,
                                                                    client: OpportunityClient) -> None:
    """A write-back sent with the client id causes an event is_own_write recognises; a person's save does not."""
    opp_id = won_deal(desk)

    client.write_back(opp_id, order_id="O-1", order_number="ORD-2026-00-000001", status="DRAFT",
                      promised_date=dt.date(2027, 1, 20))
    desk.change(opp_id, Description="coating: zinc 15 um")
    own = receiver.wait_for(about(opp_id, field="Orderhub_Order_Id__c")).event
    theirs = receiver.wait_for(about(opp_id, field="Description")).event

    assert is_own_write(own, CLIENT_ID) and own.change_origin == "com/salesforce/api/rest/59.0;client=orderhub"
    assert own.values["Orderhub_Promised_Date__c"] == "2027-01-20"
    assert not is_own_write(theirs, CLIENT_ID)
    written = client.opportunity(opp_id)
    assert (written.order_id, written.order_status, written.promised_date) == ("O-1", "DRAFT", dt.date(2027, 1, 20))


def test_a_tampered_or_stale_delivery_is_refused(desk: SalesDesk, receiver: WebhookReceiver) -> None:
    """A changed body, another secret, a missing signature or an old timestamp is refused; a fresh one passes."""
    made = desk.new_opportunity("ACME", "Deal")
    delivery = receiver.wait_for(about(made.opportunity_id, change_type="CREATE"))
    signed_at = dt.datetime.fromtimestamp(delivery.timestamp, dt.timezone.utc)

    with pytest.raises(BadSignature):
        verify(delivery.body.replace(b"Deal", b"Steal"), delivery.headers, SECRET, now=signed_at)
    with pytest.raises(BadSignature):
        verify(delivery.body, delivery.headers, "another secret", now=signed_at)
    with pytest.raises(BadSignature):
        verify(delivery.body, {"X-Orderhub-Timestamp": str(delivery.timestamp)}, SECRET, now=signed_at)
    with pytest.raises(StaleWebhook):
        verify(delivery.body, delivery.headers, SECRET, now=signed_at + dt.timedelta(seconds=301))
    verify(delivery.body, delivery.headers, SECRET, now=signed_at + dt.timedelta(seconds=299))


def test_polling_finds_changes_made_while_webhooks_were_off(desk: SalesDesk, receiver: WebhookReceiver,
                                                           client: OpportunityClient) -> None:
    """A change made during a delivery gap is never pushed, leaves a replayId jump, and changed_since finds it."""
    gap_id = desk.new_opportunity("ACME", "Changed in the gap").opportunity_id
    later_id = desk.new_opportunity("Globex", "Changed after the gap").opportunity_id
    last_seen = receiver.wait_for(about(later_id, change_type="CREATE")).event.replay_id
    before_gap = client.opportunity(gap_id).system_modstamp

    desk.set_delivery(False)
    desk.change(gap_id, Description="two pallets, not three")
    desk.set_delivery(True)
    desk.change(later_id, Description="after the gap")
    after = receiver.wait_for(about(later_id, field="Description")).event

    assert not any(about(gap_id, field="Description")(d.event) for d in receiver.accepted())
    assert after.replay_id is not None and last_seen is not None and after.replay_id > last_seen + 1
    polled = {opp.id: opp for opp in client.changed_since(before_gap)}
    assert polled[gap_id].description == "two pallets, not three"
    assert list(polled)[-1] == later_id  # oldest change first


def test_a_failing_webhook_gets_every_event_again_in_order(desk: SalesDesk, receiver: WebhookReceiver) -> None:
    """Deliveries the webhook refused are retried until taken, and each record's events arrive in order."""
    receiver.refuse_next = 3

    opp_id = desk.new_opportunity("ACME", "Deal").opportunity_id
    desk.change(opp_id, Description="first")
    desk.change(opp_id, Description="second")
    receiver.wait_for(lambda e: e.values.get("Description") == "second")

    taken = [d.event for d in receiver.accepted() if opp_id in d.event.record_ids]
    assert [(e.change_type, e.values.get("Description")) for e in taken] == \
        [("CREATE", None), ("UPDATE", "first"), ("UPDATE", "second")]
    assert [e.replay_id for e in taken] == sorted(e.replay_id for e in taken)
    assert len(receiver.deliveries) - len(receiver.accepted()) == 3


def test_transient_failures_are_retried_and_permanent_ones_refused(desk: SalesDesk,
                                                                   client: OpportunityClient) -> None:
    """Two 503s are retried away, failures beyond the attempts are CrmUnavailable, unknown ids CrmRecordRefused."""
    opp_id = desk.new_opportunity("ACME", "Deal").opportunity_id

    desk.inject_faults(2, status=503)
    assert client.opportunity(opp_id).name == "Deal"
    desk.inject_faults(3, status=500)
    with pytest.raises(CrmUnavailable):
        client.opportunity(opp_id)
    with pytest.raises(CrmRecordRefused):
        client.opportunity("006000000000999AAA")
    with pytest.raises(CrmRecordRefused):
        client.opportunity("006' OR Name != '")


def test_a_restart_keeps_the_org(state_dir: Path, sandbox: CrmSandbox, desk: SalesDesk,
                                 receiver: WebhookReceiver) -> None:
    """After down and up on the same state, records, the CA and the event sequence carry on."""
    opp_id = won_deal(desk)
    last = receiver.wait_for(about(opp_id, field="Amount")).event.replay_id

    assert salesforce.down(state_dir) == [sandbox.pid]
    assert not salesforce.status(state_dir).running
    again = salesforce.up(state_dir, process.free_port(), webhook_urls=[receiver.url], webhook_secret=SECRET)
    client = OpportunityClient(again.instance_url, again.session_id, ca_file=again.ca_file, attempts=1)
    desk_again = SalesDesk(again.instance_url, again.ca_file)
    desk_again.win(opp_id)
    desk_again.close()

    assert again.ca_file.read_bytes() == sandbox.ca_file.read_bytes()
    assert salesforce.status(state_dir).pid == again.pid != sandbox.pid
    assert len(client.line_items(opp_id)) == 2 and client.opportunity(opp_id).is_won
    client.close()
    after = receiver.wait_for(about(opp_id, field="IsWon")).event
    assert after.replay_id is not None and last is not None and after.replay_id > last


def test_a_body_that_is_no_change_event_is_refused_with_the_reason() -> None:
    """Bodies that are not JSON, lack the header, or carry an unknown change type are refused saying why."""
    header = {"entityName": "Opportunity", "recordIds": ["006000000000001AAA"], "changeType": "UPDATE",
              "commitTimestamp": 1767225600000, "transactionKey": "t-1"}
    cases = {b"{not json": "not JSON", b'{"payload": {}}': "ChangeEventHeader",
             json.dumps({"payload": {"ChangeEventHeader": {**header, "changeType": "MERGE"}}}).encode(): "MERGE",
             json.dumps({"payload": {"ChangeEventHeader": {**header, "recordIds": []}}}).encode(): "recordIds"}

    for body, reason in cases.items():
        with pytest.raises(CrmRecordRefused, match=reason):
            parse_change_event(body)
    parsed = parse_change_event(json.dumps({"payload": {"ChangeEventHeader": header, "Amount": 12.5},
                                            "event": {"replayId": 7}}).encode())
    assert (parsed.replay_id, parsed.values["Amount"], parsed.client_id) == (7, Decimal("12.5"), None)
