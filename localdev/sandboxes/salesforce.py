"""A local Salesforce for the CRM connector: the REST calls simple-salesforce makes, over TLS,
and Change Data Capture-shaped events pushed to webhooks.

One detached process (``python -m localdev.sandboxes.salesforce serve``) on 127.0.0.1, its state
in SQLite, so a restart keeps every record, stage, event and webhook cursor. simple-salesforce
hard-codes ``https``, so the server speaks TLS with a throwaway certificate from ``trustme``; the
CA is written to ``ca.pem`` and clients are pointed at it (``requests.Session.verify``).

Layout::

    <state_dir>/salesforce/
        org.sqlite3          records, stages, change events, webhook cursors
        ca.pem               the throwaway CA clients trust (kept across restarts)
        server.pem           the server's key and certificate chain (0600)
        webhook-secret       the shared secret events are signed with (0600; not on a command line)
        server.json          {"port": ...} of the running server
        salesforce.pid       removed by down()
        server.log           the server's output

The REST API (``/services/data/vNN.N/...``, any version; ``Authorization: Bearer <SESSION_ID>``,
another token answers 401 ``[{"message": ..., "errorCode": "INVALID_SESSION_ID"}]``; errors are
Salesforce's list of ``{"message", "errorCode", "fields"}``):

- ``GET  /services/data/``                      the versions (no session needed)
- ``GET  /services/data/vNN.N/query?q=<SOQL>``  a SOQL subset, below
- ``POST /services/data/vNN.N/sobjects/<Type>/``        201 ``{"id", "success", "errors"}``
- ``GET|PATCH /services/data/vNN.N/sobjects/<Type>/<Id>``   the record / 204

SOQL: ``SELECT <fields> FROM <Type> [WHERE <field> <op> <literal> [AND ...]]
[ORDER BY <field> [ASC|DESC]] [LIMIT n]`` with ``op`` one of ``= != < <= > >=`` and literals as
SOQL writes them ('text' with backslash escapes, true, false, null, numbers, dates 2026-03-01,
date-times 2026-03-01T10:00:00Z or +00:00, with or without milliseconds). Anything else
(relationship fields, OR, IN, LIKE, functions, sub-queries) is refused with ``MALFORMED_QUERY``
(unknown fields: ``INVALID_FIELD``, unknown objects: ``INVALID_TYPE``); results are one page.

Objects: Account (Name, AccountNumber), Contact (FirstName, LastName, Email, AccountId; Name derived),
Product2 (Name, ProductCode), Opportunity and OpportunityLineItem; every one has Id,
CreatedDate, LastModifiedDate and SystemModstamp. Ids are Salesforce's 18-character form
(key prefix 001/003/01t/006/00k, a serial, the case-checksum suffix); 15-character ids are
accepted. Opportunity: Name, AccountId, ContactId, StageName, IsWon, IsClosed, CloseDate,
Amount, CurrencyIsoCode, Description, OwnerId, plus the org's custom fields
``Requested_Delivery_Date__c`` (date: the delivery date sales captured from the customer),
``Customer_PO_Number__c`` and the ones orderhub writes back: ``Orderhub_Order_Id__c``,
``Orderhub_Order_Number__c``, ``Orderhub_Status__c``, ``Orderhub_Promised_Date__c`` (date).
OpportunityLineItem: OpportunityId, Product2Id, ProductCode, Quantity, UnitPrice, TotalPrice
(derived), Description, ServiceDate and the custom ``Unit__c`` (the unit as sales typed it,
e.g. "pcs", "kg").

Like Salesforce: IsWon and IsClosed are read-only and follow StageName through the org's stage
list (the standard stages; an org may add or rename won stages, e.g. "Signed"); an unknown
stage is refused. An Opportunity with line items has Amount = the sum of their TotalPrice
(writing Amount then is refused). Read-only and unknown fields are refused by name.

Change events: every committed write of an Opportunity or OpportunityLineItem appends one event
per record (global, increasing ``replayId``) and POSTs it to every registered webhook::

    {"schema": "<schema id>",
     "payload": {"ChangeEventHeader": {"entityName", "recordIds", "changeType" (CREATE|UPDATE),
                                       "changeOrigin", "transactionKey", "sequenceNumber",
                                       "commitTimestamp" (ms since epoch), "commitNumber",
                                       "commitUser", "nulledFields", "diffFields",
                                       "changedFields"},
                 <field>: <new value>, ...},
     "event": {"replayId": n}}

CREATE carries every non-null field and no changedFields; UPDATE carries the changed fields
(LastModifiedDate always, as a save always moves it). ``changeOrigin`` comes from the writer:
``com/salesforce/api/rest/<version>;client=<id>`` when the API call sent
``Sforce-Call-Options: client=<id>`` (``com/salesforce/api/rest/<version>`` without it), and
``com/salesforce/api/soap/59.0;client=SfdcInternalAPI/`` for the sales person's actions below
(what Lightning Experience writes).

Webhook signature, on every delivery attempt (fresh timestamp each attempt)::

    X-Orderhub-Timestamp: <unix seconds>
    X-Orderhub-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body bytes)>

Delivery is at least once and in replayId order per webhook (so in order per record): a
webhook that fails (connection error, non-2xx) is retried with exponential back-off, and later
events wait behind it; the cursor of what each webhook acknowledged is in SQLite, so a restart
resumes. With delivery switched off (a gap), events still get their replayId but are never
pushed: a subscriber sees the jump in replayId, and re-reads by SystemModstamp.

The sales person (``SalesDesk``; loopback only, no session), under ``/sandbox``:

- ``POST  /sandbox/opportunities``  {"account": {...} | "account_id", "contact": {...}?,
  "opportunity": {...}, "lines": [{...}]}: one transaction
- ``POST  /sandbox/opportunities/<id>/lines``, ``PATCH /sandbox/opportunities/<id>``,
  ``PATCH /sandbox/lines/<id>``, ``POST /sandbox/opportunities/<id>/win`` {"stage"?}
- ``POST  /sandbox/stages`` {"name", "closed", "won"}: add or redefine a stage
- ``GET|PUT /sandbox/webhooks/delivery`` {"enabled"}; ``GET|POST|DELETE /sandbox/webhooks``
- ``POST  /sandbox/faults`` {"count", "status"}: the next ``count`` API calls answer ``status``
- ``GET   /sandbox/events?after=<replayId>``: the event log

Sandbox simplifications: a line item change always touches its Opportunity (the Amount
roll-up), so an Opportunity event and a newer SystemModstamp follow every line change;
SystemModstamp strictly increases across the org (one millisecond apart at least); no
deletes, no query paging, no describe.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import sqlite3
import ssl
import string
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import tenacity
import trustme

from hub.errors import ConfigError
from hub.settings import PROJECT_DIR
from localdev import process

log = logging.getLogger(__name__)

API_VERSION = "59.0"
#: The one session id the sandbox accepts (``Authorization: Bearer <SESSION_ID>``).
SESSION_ID = "00D000000000001AAA!AQ8AQOrderhubSandboxSession"
DEFAULT_WEBHOOK_SECRET = "orderhub-sandbox-webhook-secret"
MODULE = "localdev.sandboxes.salesforce"  # also the marker that tells our PID from a reused one
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: What Salesforce puts in changeOrigin for a person's save in Lightning Experience.
UI_CHANGE_ORIGIN = f"com/salesforce/api/soap/{API_VERSION};client=SfdcInternalAPI/"
#: The objects Change Data Capture is enabled for in this org.
CDC_ENTITIES = ("Opportunity", "OpportunityLineItem")
#: Salesforce's standard opportunity stages: name -> (IsClosed, IsWon).
STANDARD_STAGES: dict[str, tuple[bool, bool]] = {
    "Prospecting": (False, False), "Qualification": (False, False), "Needs Analysis": (False, False),
    "Value Proposition": (False, False), "Id. Decision Makers": (False, False),
    "Perception Analysis": (False, False), "Proposal/Price Quote": (False, False),
    "Negotiation/Review": (False, False), "Closed Won": (True, True), "Closed Lost": (True, False),
}
_PID_FILE, _SECRET_FILE, _PORT_FILE, _LOG_FILE = "salesforce.pid", "webhook-secret", "server.json", "server.log"


# --- ids ---------------------------------------------------------------------------------

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase  # ASCII order: ids sort by serial
_CHECKSUM = string.ascii_uppercase + "012345"


def salesforce_id(prefix: str, serial: int) -> str:
    """The 18-character Salesforce id of the ``serial``-th record with key prefix ``prefix``."""
    digits = ""
    for _ in range(12):
        serial, rest = divmod(serial, 62)
        digits = _BASE62[rest] + digits
    short = prefix + digits
    return short + _case_checksum(short)


def _case_checksum(short: str) -> str:
    # Salesforce's suffix: one character per 5-character chunk, a bit per upper-case letter.
    return "".join(_CHECKSUM[sum(1 << i for i, c in enumerate(short[k:k + 5]) if "A" <= c <= "Z")]
                   for k in (0, 5, 10))


def full_id(text: str) -> str:
    """An id in its 18-character form (15-character ids get their checksum suffix)."""
    return text + _case_checksum(text) if len(text) == 15 and text.isalnum() else text


SALES_USER_ID = salesforce_id("005", 1)  # the sales person at the SalesDesk
INTEGRATION_USER_ID = salesforce_id("005", 2)  # whoever holds SESSION_ID


# --- the org's objects -----------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One field of an object: its type, and whether the API may write it."""

    kind: str
    """id, ref, string, textarea, bool, date, datetime, currency or double."""
    writable: bool = True
    """False for fields Salesforce derives (Id, IsWon, SystemModstamp, ...)."""
    required: bool = False
    """Must have a value on create, and may not be cleared."""
    target: str | None = None
    """For a ref: the object it points at (checked on write); None: not checked."""


@dataclass(frozen=True)
class SObjectSpec:
    """One object type: its key prefix and fields."""

    name: str
    """API name, e.g. Opportunity."""
    prefix: str
    """Key prefix of its ids, e.g. 006."""
    fields: dict[str, FieldSpec]
    """Field API name -> spec, in the order records list them."""

    def field_name(self, name: str) -> str | None:
        """The field's API name as spelled here (SOQL and JSON keys are case-insensitive)."""
        return next((known for known in self.fields if known.lower() == name.lower()), None)


def _object(name: str, prefix: str, **fields: FieldSpec) -> SObjectSpec:
    stamps = {n: FieldSpec("datetime", writable=False) for n in ("CreatedDate", "LastModifiedDate", "SystemModstamp")}
    return SObjectSpec(name, prefix, {"Id": FieldSpec("id", writable=False), **fields, **stamps})


_TEXT, _DATE, _MONEY = FieldSpec("string"), FieldSpec("date"), FieldSpec("currency")
OBJECTS: dict[str, SObjectSpec] = {spec.name: spec for spec in (
    _object("Account", "001", Name=FieldSpec("string", required=True), AccountNumber=FieldSpec("string")),
    _object("Contact", "003", FirstName=_TEXT, LastName=FieldSpec("string", required=True),
            Name=FieldSpec("string", writable=False), Email=_TEXT,
            AccountId=FieldSpec("ref", target="Account")),
    _object("Product2", "01t", Name=FieldSpec("string", required=True), ProductCode=_TEXT),
    _object("Opportunity", "006",
            Name=FieldSpec("string", required=True), AccountId=FieldSpec("ref", target="Account"),
            ContactId=FieldSpec("ref", target="Contact"), StageName=FieldSpec("string", required=True),
            IsWon=FieldSpec("bool", writable=False), IsClosed=FieldSpec("bool", writable=False),
            CloseDate=FieldSpec("date", required=True), Amount=_MONEY, CurrencyIsoCode=_TEXT,
            Description=FieldSpec("textarea"), OwnerId=FieldSpec("ref"),
            Requested_Delivery_Date__c=_DATE, Customer_PO_Number__c=_TEXT,
            Orderhub_Order_Id__c=_TEXT, Orderhub_Order_Number__c=_TEXT, Orderhub_Status__c=_TEXT,
            Orderhub_Promised_Date__c=_DATE),
    _object("OpportunityLineItem", "00k",
            OpportunityId=FieldSpec("ref", required=True, target="Opportunity"),
            Product2Id=FieldSpec("ref", target="Product2"), ProductCode=_TEXT,
            Quantity=FieldSpec("double", required=True), UnitPrice=_MONEY,
            TotalPrice=FieldSpec("currency", writable=False), Description=FieldSpec("textarea"),
            ServiceDate=_DATE, Unit__c=_TEXT),
)}


class ApiError(Exception):
    """A refusal in Salesforce's shape: HTTP status and ``[{"message", "errorCode", "fields"}]``."""

    def __init__(self, status: int, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, list(fields)

    def body(self) -> list[dict[str, Any]]:
        """The JSON body Salesforce answers with."""
        return [{"message": self.message, "errorCode": self.code, "fields": self.fields}]


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


# --- time ------------------------------------------------------------------------------


def format_stamp(at: dt.datetime) -> str:
    """A date-time as the REST API writes it: ``2026-03-01T10:00:00.000+0000``."""
    at = at.astimezone(dt.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def parse_stamp(text: str) -> dt.datetime:
    """A REST or SOQL date-time (``...+0000``, ``...+00:00``, ``...Z``) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _event_stamp(text: str) -> str:
    # Change events write date-times with Z, as the CometD JSON does.
    return parse_stamp(text).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- storage ---------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, type TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_type ON records (type);
CREATE TABLE IF NOT EXISTS serials (prefix TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stages (name TEXT PRIMARY KEY, closed INTEGER NOT NULL, won INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (replay_id INTEGER PRIMARY KEY, body TEXT NOT NULL, deliverable INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS webhooks (url TEXT PRIMARY KEY, delivered_through INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OrgStore:
    """The org in one SQLite file. Every method takes the one lock: one writer at a time, so
    stamps, replay ids and events are in commit order."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.RLock()
        self._depth = 0  # nesting of transaction(): only the outermost commits or rolls back
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self.transaction():
            self._db.executescript(_SCHEMA)
            if self._db.execute("SELECT COUNT(*) FROM stages").fetchone()[0] == 0:
                self._db.executemany("INSERT INTO stages VALUES (?, ?, ?)",
                                     [(n, c, w) for n, (c, w) in STANDARD_STAGES.items()])

    def close(self) -> None:
        """Close the file."""
        with self.lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together, or none does (nested ones join the outer one)."""
        with self.lock:
            self._depth += 1
            try:
                yield
            except BaseException:
                if self._depth == 1:
                    self._db.rollback()
                raise
            else:
                if self._depth == 1:
                    self._db.commit()
            finally:
                self._depth -= 1

    def record(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        """The type and fields of a record, or None."""
        with self.lock:
            row = self._db.execute("SELECT type, fields FROM records WHERE id = ?", (record_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def records(self, sobject: str) -> list[dict[str, Any]]:
        """Every record of one type, in id (creation) order."""
        with self.lock:
            rows = self._db.execute("SELECT fields FROM records WHERE type = ? ORDER BY id", (sobject,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def put(self, sobject: str, fields: dict[str, Any]) -> None:
        """Insert or replace a record."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                             (fields["Id"], sobject, json.dumps(fields)))

    def next_serial(self, prefix: str) -> int:
        """The next serial for ids with ``prefix`` (never reused)."""
        with self.transaction():
            self._db.execute("INSERT INTO serials VALUES (?, 1) ON CONFLICT(prefix) DO UPDATE SET last = last + 1",
                             (prefix,))
            return self._db.execute("SELECT last FROM serials WHERE prefix = ?", (prefix,)).fetchone()[0]

    def setting(self, key: str, default: str) -> str:
        """A stored setting."""
        with self.lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def stage(self, name: str) -> tuple[bool, bool] | None:
        """(IsClosed, IsWon) of a stage, or None when the org has no such stage."""
        with self.lock:
            row = self._db.execute("SELECT closed, won FROM stages WHERE name = ?", (name,)).fetchone()
        return (bool(row[0]), bool(row[1])) if row else None

    def define_stage(self, name: str, *, closed: bool, won: bool) -> None:
        """Add a stage or redefine one."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO stages VALUES (?, ?, ?)", (name, closed, won))

    def append_event(self, body: dict[str, Any], *, deliverable: bool) -> int:
        """Store an event with the next replay id (set in ``body``); its replay id."""
        with self.transaction():
            replay_id = self._db.execute("SELECT COALESCE(MAX(replay_id), 0) + 1 FROM events").fetchone()[0]
            body["event"] = {"replayId": replay_id}
            self._db.execute("INSERT INTO events VALUES (?, ?, ?)", (replay_id, json.dumps(body), deliverable))
            return replay_id

    def events(self, after: int) -> list[dict[str, Any]]:
        """Every event after ``after``, delivered or not."""
        with self.lock:
            rows = self._db.execute("SELECT body FROM events WHERE replay_id > ? ORDER BY replay_id",
                                    (after,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def register_webhook(self, url: str) -> None:
        """Register a webhook; it receives events from now on (a known one keeps its cursor)."""
        with self.transaction():
            self._db.execute("INSERT OR IGNORE INTO webhooks SELECT ?, COALESCE(MAX(replay_id), 0) FROM events",
                             (url,))

    def unregister_webhook(self, url: str) -> None:
        """Forget a webhook."""
        with self.transaction():
            self._db.execute("DELETE FROM webhooks WHERE url = ?", (url,))

    def webhooks(self) -> dict[str, int]:
        """Registered webhook URLs and the replay id each acknowledged last."""
        with self.lock:
            return dict(self._db.execute("SELECT url, delivered_through FROM webhooks ORDER BY url").fetchall())

    def next_delivery(self, url: str) -> tuple[int, bytes] | None:
        """The oldest deliverable event ``url`` has not acknowledged: replay id and body bytes."""
        with self.lock:
            row = self._db.execute(
                "SELECT e.replay_id, e.body FROM events e JOIN webhooks w ON w.url = ? "
                "WHERE e.replay_id > w.delivered_through AND e.deliverable ORDER BY e.replay_id LIMIT 1",
                (url,)).fetchone()
        return (row[0], row[1].encode()) if row else None

    def acknowledge(self, url: str, replay_id: int) -> None:
        """``url`` took every event up to ``replay_id``."""
        with self.transaction():
            self._db.execute("UPDATE webhooks SET delivered_through = MAX(delivered_through, ?) WHERE url = ?",
                             (replay_id, url))


# --- writes and their change events ------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """Who writes: the changeOrigin and commitUser their change events carry."""

    change_origin: str
    """e.g. ``com/salesforce/api/rest/59.0;client=orderhub``."""
    user_id: str
    """The Salesforce user id of the writer."""


SALES_PERSON = Writer(UI_CHANGE_ORIGIN, SALES_USER_ID)


def api_writer(version: str, call_options: str | None) -> Writer:
    """The writer of a REST call, recognised by ``Sforce-Call-Options: client=<id>``."""
    client = re.search(r"(?:^|[,;\s])client=([^,;\s]+)", call_options or "")
    origin = f"com/salesforce/api/rest/{version}" + (f";client={client.group(1)}" if client else "")
    return Writer(origin, INTEGRATION_USER_ID)


@dataclass
class _Transaction:
    """One call's writes: their common stamp and what each touched record looked like before."""

    stamp: str
    writer: Writer
    before: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None: created here
    types: dict[str, str] = field(default_factory=dict)

    def touch(self, sobject: str, record_id: str, before: dict[str, Any] | None) -> None:
        """Remember a record's state at its first write in this transaction."""
        if record_id not in self.before:
            self.before[record_id] = before
            self.types[record_id] = sobject


class Org:
    """The org's rules over the store: validation, derived fields, stamps and change events."""

    def __init__(self, store: OrgStore, on_event: Callable[[], None] | None = None) -> None:
        self.store = store
        self._on_event = on_event or (lambda: None)  # told after each commit: wakes the couriers

    @contextlib.contextmanager
    def transaction(self, writer: Writer) -> Iterator[_Transaction]:
        """A transaction: the writes inside commit together with their change events."""
        with self.store.transaction():
            txn = _Transaction(self._next_stamp(), writer)
            yield txn
            self._record_events(txn)
        self._on_event()

    def create(self, txn: _Transaction, sobject: str, fields: Mapping[str, Any]) -> str:
        """Insert a record; its id."""
        spec = _spec(sobject)
        values = self._validated(spec, fields, creating=True)
        record: dict[str, Any] = {name: None for name in spec.fields}
        record.update(values)
        if sobject == "Opportunity":
            record["OwnerId"] = record["OwnerId"] or txn.writer.user_id
            record["CurrencyIsoCode"] = record["CurrencyIsoCode"] or "EUR"
        record["Id"] = salesforce_id(spec.prefix, self.store.next_serial(spec.prefix))
        record["CreatedDate"] = txn.stamp
        txn.touch(sobject, record["Id"], None)
        self._save(txn, sobject, record, values)
        return record["Id"]

    def update(self, txn: _Transaction, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Change a record's fields (a save: LastModifiedDate moves even when no value changes)."""
        spec = _spec(sobject)
        current = self.read(sobject, record_id)
        values = self._validated(spec, fields, creating=False)
        if sobject == "Opportunity" and "Amount" in values and self._lines_of(current["Id"]):
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION",
                           "Amount can't be changed on an opportunity that has products", ["Amount"])
        txn.touch(sobject, current["Id"], current)
        self._save(txn, sobject, {**current, **values}, values)

    def read(self, sobject: str, record_id: str) -> dict[str, Any]:
        """A record's fields; NOT_FOUND when there is no such record of that type."""
        found = self.store.record(full_id(record_id))
        if found is None or found[0] != _spec(sobject).name:
            raise _not_found()
        return found[1]

    def _save(self, txn: _Transaction, sobject: str, record: dict[str, Any], written: dict[str, Any]) -> None:
        record["LastModifiedDate"] = record["SystemModstamp"] = txn.stamp
        if sobject == "Opportunity":
            self._derive_stage(record)
        elif sobject == "Contact":
            record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
        elif sobject == "OpportunityLineItem":
            self._derive_product(txn, record, written)
            record["TotalPrice"] = _total(record["Quantity"], record["UnitPrice"])
        self.store.put(sobject, record)
        if sobject == "OpportunityLineItem":
            self._roll_up(txn, record["OpportunityId"])

    def _derive_stage(self, record: dict[str, Any]) -> None:
        stage = self.store.stage(record["StageName"])
        if stage is None:
            raise ApiError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                           f"Stage: bad value for restricted picklist field: {record['StageName']}", ["StageName"])
        record["IsClosed"], record["IsWon"] = stage

    def _derive_product(self, txn: _Transaction, record: dict[str, Any], written: dict[str, Any]) -> None:
        # A code written now names the product (found or added to the catalogue); else the
        # product named by id gives its code, as Salesforce copies ProductCode from Product2.
        if written.get("ProductCode"):
            record["Product2Id"] = self._product_for(txn, written["ProductCode"])
        elif record["Product2Id"]:
            record["ProductCode"] = self.read("Product2", record["Product2Id"])["ProductCode"]
        else:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Product2Id]", ["Product2Id"])

    def _product_for(self, txn: _Transaction, code: str) -> str:
        known = next((p["Id"] for p in self.store.records("Product2") if p["ProductCode"] == code), None)
        return known or self.create(txn, "Product2", {"Name": code, "ProductCode": code})

    def _roll_up(self, txn: _Transaction, opportunity_id: str) -> None:
        before = self.read("Opportunity", opportunity_id)
        txn.touch("Opportunity", opportunity_id, before)
        opportunity = dict(before)  # a copy: the event compares against ``before``
        totals = [Decimal(str(line["TotalPrice"] or 0)) for line in self._lines_of(opportunity_id)]
        opportunity["Amount"] = float(sum(totals, Decimal(0)))
        opportunity["LastModifiedDate"] = opportunity["SystemModstamp"] = txn.stamp
        self.store.put("Opportunity", opportunity)

    def _lines_of(self, opportunity_id: str) -> list[dict[str, Any]]:
        return [line for line in self.store.records("OpportunityLineItem") if line["OpportunityId"] == opportunity_id]

    def _validated(self, spec: SObjectSpec, fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        values = {}
        for name, value in fields.items():
            known = spec.field_name(name)
            if known is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}", [name])
            if not spec.fields[known].writable:
                raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                               f"Unable to create/update fields: {known}. Please check the security settings "
                               "of this field and verify that it is read/write for your profile or permission set.",
                               [known])
            values[known] = self._typed(spec.fields[known], known, value)
        missing = [n for n, f in spec.fields.items() if f.required and (creating or n in values) and values.get(n) is None]
        if missing:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        return values

    def _typed(self, spec: FieldSpec, name: str, value: Any) -> Any:
        if value is None:
            return None
        problem = _type_problem(spec.kind, value)
        if problem:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize {name}: {problem}", [name])
        if spec.kind in ("currency", "double"):
            return float(value)  # Salesforce answers numbers as doubles: 250.0
        if spec.kind == "ref":
            value = full_id(value)
            found = self.store.record(value)
            if spec.target and (found is None or found[0] != spec.target):
                raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {name}", [name])
        return value

    def _next_stamp(self) -> str:
        # Strictly increasing, so "changed since the last stamp seen" never ties inside the org.
        last = int(self.store.setting("last_stamp_ms", "0"))
        now = max(int(time.time() * 1000), last + 1)
        self.store.set_setting("last_stamp_ms", str(now))
        return format_stamp(dt.datetime.fromtimestamp(now / 1000, dt.timezone.utc))

    def _record_events(self, txn: _Transaction) -> None:
        deliverable = self.store.setting("delivery_enabled", "1") == "1"
        commit_number = int(self.store.setting("commit_number", "0")) + 1
        self.store.set_setting("commit_number", str(commit_number))
        key, sequence = str(uuid.uuid4()), 0
        for record_id, before in txn.before.items():
            sobject = txn.types[record_id]
            if sobject not in CDC_ENTITIES:
                continue
            sequence += 1
            after = self.store.record(record_id)[1]  # type: ignore[index]
            header = {"entityName": sobject, "recordIds": [record_id],
                      "changeType": "CREATE" if before is None else "UPDATE",
                      "changeOrigin": txn.writer.change_origin, "transactionKey": key, "sequenceNumber": sequence,
                      "commitTimestamp": int(parse_stamp(txn.stamp).timestamp() * 1000),
                      "commitNumber": commit_number, "commitUser": txn.writer.user_id, "diffFields": []}
            changed = _changed_fields(before, after)
            header["changedFields"] = [] if before is None else changed
            header["nulledFields"] = [] if before is None else [n for n in changed if after[n] is None]
            values = {n: _event_value(OBJECTS[sobject], n, after[n]) for n in changed}
            body = {"schema": _schema_id(sobject), "payload": {"ChangeEventHeader": header, **values}}
            self.store.append_event(body, deliverable=deliverable)


def _spec(sobject: str) -> SObjectSpec:
    spec = next((s for name, s in OBJECTS.items() if name.lower() == sobject.lower()), None)
    if spec is None:
        raise ApiError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{sobject}'")
    return spec


def _type_problem(kind: str, value: Any) -> str | None:
    if kind in ("string", "textarea", "ref", "id"):
        return None if isinstance(value, str) else f"expected text, got {value!r}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if kind in ("currency", "double"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    try:
        (dt.date.fromisoformat if kind == "date" else parse_stamp)(value)
    except (TypeError, ValueError):
        return f"expected a {kind} in ISO 8601, got {value!r}"
    return None


def _total(quantity: float | None, unit_price: float | None) -> float | None:
    if quantity is None or unit_price is None:
        return None
    return float((Decimal(str(quantity)) * Decimal(str(unit_price))).quantize(Decimal("0.01")))


def _changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    # A CREATE carries every field that has a value; neither carries Id (it is in recordIds)
    # nor SystemModstamp (change events leave it out).
    skip = ("Id", "SystemModstamp")
    if before is None:
        return [n for n, v in after.items() if v is not None and n not in skip]
    return [n for n, v in after.items() if n not in skip and (v != before.get(n) or n == "LastModifiedDate")]


def _event_value(spec: SObjectSpec, name: str, value: Any) -> Any:
    return _event_stamp(value) if value is not None and spec.fields[name].kind == "datetime" else value


def _schema_id(sobject: str) -> str:
    fields = ",".join(OBJECTS[sobject].fields)
    return hashlib.sha256(f"{sobject}:{fields}".encode()).hexdigest()[:22]


# --- SOQL ------------------------------------------------------------------------------

_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$", re.I | re.S)
_CONDITION = re.compile(r"\s*(?P<field>\w+)\s*(?P<op>!=|<=|>=|=|<|>)\s*(?P<literal>'(?:[^'\\]|\\.)*'|[\w:.+-]+)\s*")
_AND = re.compile(r"AND\b", re.I)
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_UNESCAPE = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _malformed(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_QUERY", message)


@dataclass(frozen=True)
class _Condition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class SoqlQuery:
    """A parsed query of the supported subset."""

    sobject: SObjectSpec
    """The object queried."""
    fields: tuple[str, ...]
    """Selected fields, in the order asked."""
    conditions: tuple[_Condition, ...]
    """WHERE conditions, all of which must hold."""
    order_by: str | None
    """ORDER BY field, if any."""
    descending: bool
    """ORDER BY ... DESC."""
    limit: int | None
    """LIMIT, if any."""


def parse_soql(text: str) -> SoqlQuery:
    """Parse the supported SOQL subset; ApiError (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE) otherwise."""
    match = _SOQL.match(text)
    if match is None:
        raise _malformed(f"unsupported query (the sandbox knows SELECT ... FROM ... [WHERE ...] "
                         f"[ORDER BY ...] [LIMIT n]): {text}")
    spec = next((s for name, s in OBJECTS.items() if name.lower() == match["sobject"].lower()), None)
    if spec is None:
        raise ApiError(400, "INVALID_TYPE", f"sObject type '{match['sobject']}' is not supported.")
    fields = tuple(_query_field(spec, name.strip()) for name in match["fields"].split(","))
    conditions = tuple(_conditions(spec, match["where"])) if match["where"] else ()
    order_by = _query_field(spec, match["order"]) if match["order"] else None
    return SoqlQuery(spec, fields, conditions, order_by, (match["direction"] or "").upper() == "DESC",
                     int(match["limit"]) if match["limit"] else None)


def _query_field(spec: SObjectSpec, name: str) -> str:
    known = spec.field_name(name) if re.fullmatch(r"\w+", name) else None
    if known is None:
        raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{spec.name}'. (The sandbox "
                       "knows plain fields of the queried object only.)")
    return known


def _conditions(spec: SObjectSpec, where: str) -> Iterator[_Condition]:
    position = 0
    while True:
        match = _CONDITION.match(where, position)
        if match is None:
            raise _malformed(f"unsupported condition at '{where[position:]}' (field op literal [AND ...] only)")
        name = _query_field(spec, match["field"])
        yield _Condition(name, match["op"], _literal(spec.fields[name].kind, name, match["literal"]))
        position = match.end()
        if position == len(where):
            return
        joiner = _AND.match(where, position)
        if joiner is None:
            raise _malformed(f"unsupported condition at '{where[position:]}' (only AND joins conditions)")
        position = joiner.end()


def _literal(kind: str, name: str, text: str) -> Any:
    if text.lower() == "null":
        return None
    quoted = text.startswith("'")
    if kind in ("string", "textarea", "ref", "id"):
        if not quoted:
            raise _malformed(f"{name} is compared with text: quote the value")
        value = re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m[1], m[1]), text[1:-1])
        return full_id(value) if kind in ("ref", "id") else value
    if quoted:
        raise _malformed(f"value of filter criterion for field '{name}' must be of type {kind} "
                         "and should not be enclosed in quotes")
    try:
        if kind == "bool" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "datetime" and _DATETIME.fullmatch(text):
            return parse_stamp(text)
        if kind == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.date.fromisoformat(text)
        if kind in ("currency", "double"):
            return Decimal(text)
    except ValueError:
        pass
    raise _malformed(f"'{text}' is not a {kind} literal for {name}")


def run_query(org: Org, query: SoqlQuery, version: str) -> dict[str, Any]:
    """The REST answer to a query: ``{"totalSize", "done", "records"}`` (one page)."""
    records = [r for r in org.store.records(query.sobject.name)
               if all(_holds(query.sobject, c, r[c.field]) for c in query.conditions)]
    if query.order_by:
        kind = query.sobject.fields[query.order_by].kind
        # ascending puts nulls first, as SOQL does
        records.sort(key=lambda r: (r[query.order_by] is not None, _comparable(kind, r[query.order_by])),
                     reverse=query.descending)
    records = records[:query.limit] if query.limit is not None else records
    rows = [rest_record(query.sobject, r, version, query.fields) for r in records]
    return {"totalSize": len(rows), "done": True, "records": rows}


def _holds(spec: SObjectSpec, condition: _Condition, value: Any) -> bool:
    if condition.value is None or value is None:
        return _COMPARE[condition.op](value, condition.value) if condition.op in ("=", "!=") else False
    return _COMPARE[condition.op](_comparable(spec.fields[condition.field].kind, value), condition.value)


def _comparable(kind: str, value: Any) -> Any:
    if value is None:
        return 0
    if kind == "datetime":
        return parse_stamp(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind in ("currency", "double"):
        return Decimal(str(value))
    return value


def rest_record(spec: SObjectSpec, record: Mapping[str, Any], version: str,
                fields: Sequence[str] | None = None) -> dict[str, Any]:
    """A record as the REST API answers it: ``attributes`` first, then the fields asked for."""
    url = f"/services/data/v{version}/sobjects/{spec.name}/{record['Id']}"
    return {"attributes": {"type": spec.name, "url": url}, **{n: record[n] for n in fields or spec.fields}}


# --- webhook delivery ----------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Orderhub-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class _WebhookRefused(Exception):
    """The webhook answered, but not with 2xx."""


class WebhookCourier(threading.Thread):
    """Delivers the org's events to one webhook, in replay order, at least once: the cursor moves
    only after a 2xx, and a failure is retried with back-off while later events wait."""

    def __init__(self, store: OrgStore, url: str, secret: str, *, backoff_s: float = 0.1,
                 max_backoff_s: float = 5.0) -> None:
        super().__init__(name=f"webhook {url}", daemon=True)
        self.url, self._store, self._secret = url, store, secret
        self._backoff_s, self._max_backoff_s = backoff_s, max_backoff_s
        self.wake, self.stopping = threading.Event(), threading.Event()

    def run(self) -> None:
        """Deliver until stopped."""
        with httpx.Client(timeout=10.0) as http:
            while not self.stopping.is_set():
                self.wake.clear()
                pending = self._store.next_delivery(self.url)
                if pending is None:
                    self.wake.wait(1.0)  # set at once by a new event; the timeout only re-checks stopping
                elif self._deliver(http, *pending):
                    self._store.acknowledge(self.url, pending[0])

    def stop(self) -> None:
        """Stop after the attempt under way."""
        self.stopping.set()
        self.wake.set()

    def _deliver(self, http: httpx.Client, replay_id: int, body: bytes) -> bool:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((httpx.HTTPError, _WebhookRefused)),
            wait=tenacity.wait_exponential(multiplier=self._backoff_s, max=self._max_backoff_s),
            stop=tenacity.stop_when_event_set(self.stopping),
            sleep=self.stopping.wait,  # a stopping server does not sit out a back-off
            before_sleep=lambda state: log.warning("webhook %s: event %d not taken (%s); retrying", self.url,
                                                   replay_id, state.outcome.exception() if state.outcome else "?"),
            reraise=True)
        try:
            retrying(self._post, http, body)
        except (httpx.HTTPError, _WebhookRefused):
            return False  # only when stopping: the event stays pending for the next start
        return True

    def _post(self, http: httpx.Client, body: bytes) -> None:
        timestamp = int(time.time())  # signed afresh per attempt: a retry is never stale
        answer = http.post(self.url, content=body, headers={
            "Content-Type": "application/json", "X-Orderhub-Timestamp": str(timestamp),
            "X-Orderhub-Signature": sign(self._secret, timestamp, body)})
        if not answer.is_success:
            raise _WebhookRefused(f"HTTP {answer.status_code}")


class Couriers:
    """One courier per registered webhook."""

    def __init__(self, store: OrgStore, secret: str, *, backoff_s: float = 0.1) -> None:
        self._store, self._secret, self._backoff_s = store, secret, backoff_s
        self._running: dict[str, WebhookCourier] = {}
        self._lock = threading.Lock()

    def sync(self) -> None:
        """Start couriers for registered webhooks, stop those of forgotten ones."""
        registered = self._store.webhooks()
        with self._lock:
            for url in set(self._running) - set(registered):
                self._running.pop(url).stop()
            for url in set(registered) - set(self._running):
                courier = WebhookCourier(self._store, url, self._secret, backoff_s=self._backoff_s)
                self._running[url] = courier
                courier.start()

    def wake(self) -> None:
        """Tell every courier there is a new event."""
        with self._lock:
            for courier in self._running.values():
                courier.wake.set()

    def stop(self) -> None:
        """Stop every courier and wait for them."""
        with self._lock:
            couriers = list(self._running.values())
            self._running.clear()
        for courier in couriers:
            courier.stop()
        for courier in couriers:
            courier.join(timeout=15.0)


# --- HTTP ------------------------------------------------------------------------------

_API_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)/(?P<rest>.*?)/?$")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status and JSON body (None: no body)."""

    status: int
    """HTTP status."""
    body: Any = None
    """JSON body, or None."""


class Router:
    """Answers the REST API and the sandbox's sales-person endpoints."""

    def __init__(self, org: Org, couriers: Couriers) -> None:
        self.org, self.couriers = org, couriers
        self._faults: dict[str, int] = {"count": 0, "status": 503}
        self._faults_lock = threading.Lock()

    def answer(self, method: str, target: str, headers: Mapping[str, str], body: Any) -> Reply:
        """The reply to one request."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/services/data":
                return Reply(200, [{"label": "Winter '24", "url": f"/services/data/v{API_VERSION}",
                                    "version": API_VERSION}])
            if match := _API_PATH.match(url.path):
                return self._api(method, match["version"], match["rest"], query, headers, body)
            if path.startswith("/sandbox/"):
                return self._sandbox(method, path.removeprefix("/sandbox/").split("/"), query, body)
            raise _not_found()
        except ApiError as error:
            return Reply(error.status, error.body())

    def _api(self, method: str, version: str, rest: str, query: Mapping[str, str], headers: Mapping[str, str],
             body: Any) -> Reply:
        if headers.get("Authorization") != f"Bearer {SESSION_ID}":
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if fault := self._take_fault():
            raise ApiError(fault, "SERVER_UNAVAILABLE", "The server is temporarily unavailable (sandbox fault)")
        parts = rest.split("/")
        if parts == ["query"] and method == "GET":
            if "q" not in query:
                raise _malformed("the q parameter is missing")
            return Reply(200, run_query(self.org, parse_soql(query["q"]), version))
        if len(parts) == 2 and parts[0] == "sobjects" and method == "POST":
            with self.org.transaction(api_writer(version, headers.get("Sforce-Call-Options"))) as txn:
                record_id = self.org.create(txn, parts[1], _fields(body))
            return Reply(201, {"id": record_id, "success": True, "errors": []})
        if len(parts) == 3 and parts[0] == "sobjects":
            return self._record(method, version, parts[1], parts[2], query, headers, body)
        raise _not_found()

    def _record(self, method: str, version: str, sobject: str, record_id: str, query: Mapping[str, str],
                headers: Mapping[str, str], body: Any) -> Reply:
        if method == "GET":
            spec = _spec(sobject)
            fields = [_query_field(spec, n.strip()) for n in query["fields"].split(",")] if "fields" in query else None
            return Reply(200, rest_record(spec, self.org.read(sobject, record_id), version, fields))
        if method == "PATCH":
            with self.org.transaction(api_writer(version, headers.get("Sforce-Call-Options"))) as txn:
                self.org.update(txn, sobject, record_id, _fields(body))
            return Reply(204)
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,PATCH")

    def _take_fault(self) -> int | None:
        with self._faults_lock:
            if self._faults["count"] <= 0:
                return None
            self._faults["count"] -= 1
            return self._faults["status"]

    def _sandbox(self, method: str, parts: list[str], query: Mapping[str, str], body: Any) -> Reply:
        match method, parts:
            case "POST", ["opportunities"]:
                return Reply(201, self._new_opportunity(_fields(body)))
            case "POST", ["opportunities", opp_id, "lines"]:
                with self.org.transaction(SALES_PERSON) as txn:
                    return Reply(201, {"id": self.org.create(txn, "OpportunityLineItem",
                                                             {**_fields(body), "OpportunityId": opp_id})})
            case "PATCH", ["opportunities", opp_id]:
                return self._change("Opportunity", opp_id, _fields(body))
            case "PATCH", ["lines", line_id]:
                return self._change("OpportunityLineItem", line_id, _fields(body))
            case "POST", ["opportunities", opp_id, "win"]:
                return self._win(opp_id, _fields(body or {}).get("stage"))
            case "POST", ["stages"]:
                spec = _fields(body)
                self.org.store.define_stage(str(spec["name"]), closed=bool(spec.get("closed", True)),
                                            won=bool(spec.get("won", False)))
                return Reply(204)
            case _:
                return self._admin(method, parts, query, body)

    def _admin(self, method: str, parts: list[str], query: Mapping[str, str], body: Any) -> Reply:
        store = self.org.store
        match method, parts:
            case "GET", ["webhooks", "delivery"]:
                return Reply(200, {"enabled": store.setting("delivery_enabled", "1") == "1"})
            case "PUT", ["webhooks", "delivery"]:
                store.set_setting("delivery_enabled", "1" if _fields(body).get("enabled") else "0")
                return Reply(204)
            case "GET", ["webhooks"]:
                return Reply(200, [{"url": u, "delivered_through": n} for u, n in store.webhooks().items()])
            case "POST", ["webhooks"]:
                store.register_webhook(str(_fields(body)["url"]))
                self.couriers.sync()
                return Reply(204)
            case "DELETE", ["webhooks"]:
                store.unregister_webhook(query.get("url", ""))
                self.couriers.sync()
                return Reply(204)
            case "POST", ["faults"]:
                spec = _fields(body)
                with self._faults_lock:
                    self._faults = {"count": int(spec.get("count", 1)), "status": int(spec.get("status", 503))}
                return Reply(204)
            case "GET", ["events"]:
                return Reply(200, store.events(int(query.get("after", "0"))))
        raise _not_found()

    def _new_opportunity(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        with self.org.transaction(SALES_PERSON) as txn:
            account_id = spec.get("account_id") or self.org.create(txn, "Account", _fields(spec.get("account")))
            opportunity = {**_fields(spec.get("opportunity")), "AccountId": account_id}
            if spec.get("contact"):
                contact = {**_fields(spec["contact"]), "AccountId": account_id}
                opportunity["ContactId"] = self.org.create(txn, "Contact", contact)
            opp_id = self.org.create(txn, "Opportunity", opportunity)
            line_ids = [self.org.create(txn, "OpportunityLineItem", {**_fields(line), "OpportunityId": opp_id})
                        for line in spec.get("lines") or []]
        return {"account_id": account_id, "contact_id": opportunity.get("ContactId"), "opportunity_id": opp_id,
                "line_ids": line_ids}

    def _change(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> Reply:
        with self.org.transaction(SALES_PERSON) as txn:
            self.org.update(txn, sobject, record_id, fields)
        return Reply(204)

    def _win(self, opp_id: str, stage: str | None) -> Reply:
        # An org may call its won stage anything ("Signed"): a stage named here that the org does
        # not have yet is added as a won one; what makes the deal won is IsWon, never the label.
        store = self.org.store
        if stage is None:
            stage = "Closed Won"
        elif store.stage(stage) is None:
            store.define_stage(stage, closed=True, won=True)
        if store.stage(stage) != (True, True):
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", f"stage {stage!r} is not a won stage", ["StageName"])
        return self._change("Opportunity", opp_id, {"StageName": stage})


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
    return body


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (simple-salesforce's requests session reuses connections)."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle kept-alive connection is closed after this
    server: "SandboxServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """Answer a GET."""
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        """Answer a POST."""
        self._answer("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        """Answer a PATCH."""
        self._answer("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        """Answer a PUT."""
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        """Answer a DELETE."""
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            reply = Reply(400, ApiError(400, "JSON_PARSER_ERROR", f"not JSON: {exc}").body())
        else:
            try:
                reply = self.server.router.answer(method, self.path, self.headers, body)
            except Exception as exc:  # a sandbox bug: answer like Salesforce's own 500, keep serving
                log.exception("%s %s failed", method, self.path)
                reply = Reply(500, ApiError(500, "UNKNOWN_EXCEPTION", repr(exc)).body())
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Requests go to the log, not stderr."""
        log.info("%s " + format, self.address_string(), *args)


class SandboxServer(ThreadingHTTPServer):
    """The HTTPS server: TLS is set up per connection, in the connection's own thread, so a
    slow or failing handshake never holds up accepting the next one."""

    daemon_threads = True

    def __init__(self, port: int, router: Router, tls: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.router, self._tls = router, tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handle one connection over TLS."""
        with self._tls.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line per failed connection (a refused handshake is no server error)."""
        log.warning("connection from %s failed: %s", client_address, sys.exc_info()[1])


# --- files, serve and process management ---------------------------------------------------


def sandbox_dir(state_dir: Path) -> Path:
    """The sandbox's folder under ``state_dir``."""
    return state_dir / "salesforce"


def ensure_certificates(folder: Path) -> tuple[Path, Path]:
    """The CA file clients trust and the server's key+chain file; made once with ``trustme``."""
    ca_file, server_file = folder / "ca.pem", folder / "server.pem"
    if not (ca_file.is_file() and server_file.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="orderhub Salesforce sandbox")
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        _write_private(server_file, leaf.private_key_and_cert_chain_pem.bytes())
        ca_file.write_bytes(ca.cert_pem.bytes())
    return ca_file, server_file


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)


def serve(folder: Path, port: int, webhook_urls: Sequence[str] = (), *, backoff_s: float = 0.1) -> None:
    """Run the sandbox in this process until SIGTERM or SIGINT (what ``up`` starts detached)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    _, server_file = ensure_certificates(folder)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server_file)
    secret_file = folder / _SECRET_FILE
    secret = secret_file.read_text().strip() if secret_file.is_file() else DEFAULT_WEBHOOK_SECRET
    store = OrgStore(folder / "org.sqlite3")
    couriers = Couriers(store, secret, backoff_s=backoff_s)
    for url in webhook_urls:
        store.register_webhook(url)
    server = SandboxServer(port, Router(Org(store, on_event=couriers.wake), couriers), tls)
    def stop(*_: Any) -> None:  # shutdown() waits for serve_forever, so not on the loop's thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    couriers.sync()
    written = folder / f"{_PORT_FILE}.tmp"  # renamed whole: a reader never sees it half written
    written.write_text(json.dumps({"port": port}))
    os.replace(written, folder / _PORT_FILE)
    log.info("Salesforce sandbox on https://127.0.0.1:%d, webhooks %s", port, list(store.webhooks()))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        couriers.stop()
        store.close()


@dataclass(frozen=True)
class CrmSandbox:
    """A running sandbox: where it is and how to talk to it."""

    instance_url: str
    """``https://127.0.0.1:<port>``, what simple-salesforce takes as ``instance_url``."""
    session_id: str
    """The session id to send as ``Authorization: Bearer``."""
    ca_file: Path
    """The CA certificate (PEM) to verify the server with."""
    webhook_secret: str = field(repr=False)
    """The secret events are signed with."""
    pid: int
    """The server's process id."""
    folder: Path
    """The sandbox's folder (state, certificates, log)."""


def up(state_dir: Path, port: int, *, webhook_urls: Sequence[str] = (),
       webhook_secret: str = DEFAULT_WEBHOOK_SECRET) -> CrmSandbox:
    """Start the sandbox unless it runs, wait until it answers over TLS, register ``webhook_urls``.

    A sandbox already running on ``state_dir`` is kept, on whatever port it was started with.
    """
    folder = sandbox_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, _ = ensure_certificates(folder)
    pid = process.recorded_pid(folder / _PID_FILE, marker=MODULE)
    if pid is None:
        if process.answers(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this Salesforce sandbox")
        (folder / _PORT_FILE).unlink(missing_ok=True)
        _write_private(folder / _SECRET_FILE, webhook_secret.encode())
        cmd = [sys.executable, "-m", MODULE, "serve", "--dir", folder, "--port", str(port)]
        cmd += [arg for url in webhook_urls for arg in ("--webhook", url)]
        pid = process.spawn(cmd, log=folder / _LOG_FILE, pidfile=folder / _PID_FILE, cwd=PROJECT_DIR)
    elif (folder / _SECRET_FILE).read_text() != webhook_secret:
        raise ConfigError(f"the Salesforce sandbox in {folder} runs with another webhook secret: down() it first")
    sandbox = CrmSandbox(f"https://127.0.0.1:{_wait_for_port(folder, pid)}", SESSION_ID, ca_file,
                         webhook_secret, pid, folder)
    _wait_answering(sandbox)
    if webhook_urls:  # a kept server learns them here; a new one already has them (kept cursors stay)
        desk = SalesDesk(sandbox.instance_url, ca_file)
        try:
            for url in webhook_urls:
                desk.register_webhook(url)
        finally:
            desk.close()
    return sandbox


def _wait_for_port(folder: Path, pid: int) -> int:
    port_file = folder / _PORT_FILE
    if not process.wait_until(lambda: port_file.is_file() or not process.alive(pid), START_TIMEOUT) \
            or not port_file.is_file():
        _give_up(folder, pid, "did not start")
    return int(json.loads(port_file.read_text())["port"])


def _wait_answering(sandbox: CrmSandbox) -> None:
    tls = ssl.create_default_context(cafile=str(sandbox.ca_file))

    def answering() -> bool:
        if not process.alive(sandbox.pid):
            return True  # stop waiting: it died
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{sandbox.instance_url}/services/data/", verify=tls, timeout=2.0).status_code == 200
        return False

    if not process.wait_until(answering, START_TIMEOUT) or not process.alive(sandbox.pid):
        _give_up(sandbox.folder, sandbox.pid, "does not answer over TLS")


def _give_up(folder: Path, pid: int, why: str) -> None:
    process.stop([pid], timeout=STOP_TIMEOUT)
    (folder / _PID_FILE).unlink(missing_ok=True)
    raise ConfigError(f"the Salesforce sandbox {why}; end of {folder / _LOG_FILE}:\n{process.tail(folder / _LOG_FILE)}")


def down(state_dir: Path) -> list[int]:
    """Stop the sandbox of ``state_dir`` by its recorded PID; the PIDs stopped."""
    folder = sandbox_dir(state_dir)
    stopped = process.stop_recorded(folder / _PID_FILE, marker=MODULE, timeout=STOP_TIMEOUT)
    (folder / _PORT_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> process.ServerStatus:
    """Whether the sandbox of ``state_dir`` runs, and where."""
    folder = sandbox_dir(state_dir)
    pid = process.recorded_pid(folder / _PID_FILE, marker=MODULE)
    port = None
    if pid is not None and (folder / _PORT_FILE).is_file():
        port = int(json.loads((folder / _PORT_FILE).read_text())["port"])
    return process.ServerStatus("Salesforce sandbox", folder, pid, f"https://127.0.0.1:{port}" if port else None)


# --- the sales person ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewOpportunity:
    """What ``SalesDesk.new_opportunity`` created."""

    account_id: str
    """The Account's id."""
    opportunity_id: str
    """The Opportunity's id."""
    contact_id: str | None = None
    """The Contact's id, when one was created."""
    line_ids: tuple[str, ...] = ()
    """The line items' ids, in the order given."""


class SalesDeskRefused(Exception):
    """The sandbox refused a sales person's action; ``status`` and Salesforce's error ``body``."""

    def __init__(self, action: str, status: int, body: str) -> None:
        super().__init__(f"Salesforce sandbox refused {action}: {status} {body}")
        self.status, self.body = status, body


class SalesDesk:
    """A sales person working in the sandbox (their saves carry Lightning's changeOrigin)."""

    def __init__(self, instance_url: str, ca_file: Path, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(base_url=instance_url, timeout=timeout_s,
                                  verify=ssl.create_default_context(cafile=str(ca_file)))

    def close(self) -> None:
        """Close the connection."""
        self._http.close()

    def new_opportunity(self, account_name: str, name: str, *, stage: str = "Prospecting",
                        close_date: str = "2026-12-31", contact: str | None = None,
                        lines: Sequence[Mapping[str, Any]] = (), account_number: str | None = None,
                        **fields: Any) -> NewOpportunity:
        """Create an account (or use ``account_id=``), an opportunity with ``fields`` (Salesforce
        field names, e.g. ``Description``, ``Requested_Delivery_Date__c``), an optional contact
        ("First Last") and line items (``line(...)`` builds one), in one transaction."""
        account_id = fields.pop("account_id", None)
        body: dict[str, Any] = {"opportunity": {"Name": name, "StageName": stage, "CloseDate": close_date, **fields},
                                "lines": list(lines)}
        account = {"Name": account_name, **({"AccountNumber": account_number} if account_number else {})}
        body.update({"account_id": account_id} if account_id else {"account": account})
        if contact:
            first, _, last = contact.rpartition(" ")
            body["contact"] = {"FirstName": first or None, "LastName": last}
        made = self._send("POST", "/sandbox/opportunities", body)
        return NewOpportunity(made["account_id"], made["opportunity_id"], made["contact_id"], tuple(made["line_ids"]))

    def add_line(self, opp_id: str, product_code: str, quantity: float, *, unit: str | None = "pcs",
                 unit_price: float | None = None, **fields: Any) -> str:
        """Add a line item to an opportunity; its id."""
        return self._send("POST", f"/sandbox/opportunities/{opp_id}/lines",
                          line(product_code, quantity, unit=unit, unit_price=unit_price, **fields))["id"]

    def win(self, opp_id: str, *, stage: str | None = None) -> None:
        """Mark the opportunity won: "Closed Won", or the org's own won stage ``stage`` (added if new)."""
        self._send("POST", f"/sandbox/opportunities/{opp_id}/win", {"stage": stage} if stage else {})

    def change(self, opp_id: str, **fields: Any) -> None:
        """Change opportunity fields (Salesforce field names)."""
        self._send("PATCH", f"/sandbox/opportunities/{opp_id}", fields)

    def change_line(self, line_id: str, **fields: Any) -> None:
        """Change line item fields (Salesforce field names)."""
        self._send("PATCH", f"/sandbox/lines/{line_id}", fields)

    def define_stage(self, name: str, *, closed: bool, won: bool) -> None:
        """Add an opportunity stage to the org, or redefine one."""
        self._send("POST", "/sandbox/stages", {"name": name, "closed": closed, "won": won})

    def set_delivery(self, enabled: bool) -> None:
        """Switch webhook delivery on or off (off: events made meanwhile are never pushed)."""
        self._send("PUT", "/sandbox/webhooks/delivery", {"enabled": enabled})

    def register_webhook(self, url: str) -> None:
        """Push events to ``url`` from now on."""
        self._send("POST", "/sandbox/webhooks", {"url": url})

    def inject_faults(self, count: int, *, status: int = 503) -> None:
        """Make the next ``count`` API calls fail with ``status``."""
        self._send("POST", "/sandbox/faults", {"count": count, "status": status})

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """The org's change events after replay id ``after``, pushed or not."""
        return self._send("GET", "/sandbox/events", None, params={"after": after})

    def _send(self, method: str, path: str, body: Any, **kwargs: Any) -> Any:
        answer = self._http.request(method, path, json=body, **kwargs)
        if not answer.is_success:
            raise SalesDeskRefused(f"{method} {path}", answer.status_code, answer.text)
        return answer.json() if answer.content else None


def line(product_code: str, quantity: float, *, unit: str | None = "pcs", unit_price: float | None = None,
         **fields: Any) -> dict[str, Any]:
    """A line item's fields for ``SalesDesk.new_opportunity(lines=...)``."""
    return {"ProductCode": product_code, "Quantity": quantity, "Unit__c": unit, "UnitPrice": unit_price, **fields}


# --- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localdev.sandboxes.salesforce serve|up|down|status``."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the server in the foreground (what up starts)")
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--webhook", action="append", default=[])
    start = commands.add_parser("up", help="start detached, print how to reach it")
    start.add_argument("--port", type=int, default=58443)
    start.add_argument("--webhook", action="append", default=[])
    for sub in (start, commands.add_parser("down"), commands.add_parser("status")):
        sub.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.dir, args.port, args.webhook)
    elif args.command == "up":
        sandbox = up(args.state_dir, args.port, webhook_urls=args.webhook)
        print(f"{sandbox.instance_url} session {sandbox.session_id} CA {sandbox.ca_file} pid {sandbox.pid}")
    elif args.command == "down":
        print("stopped", down(args.state_dir) or "nothing")
    else:
        print(status(args.state_dir).text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
