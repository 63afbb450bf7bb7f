"""The ERP sandbox: mock-sap 0.22.0 (PyPI, MIT, a third party's imitation of SAP's OData
services) as one detached process on 127.0.0.1, recorded by PID, its data in SQLite.

orderhub's ERP client talks to ``API_SALES_ORDER_SRV`` here exactly as it would to an S/4HANA
system: ``$metadata`` with ``sap:`` annotations, basic authentication, CSRF tokens, deep insert,
ETags on ``LastChangeDate`` and ``!deltatoken`` delta reads. This module also plays the ERP's
*users* (a clerk who prices and confirms an order, deletes one, ships one) and switches the
mock's failure modes on and off, so tests and the demo can drive the ERP side end to end.

Layout::

    <state_dir>/sap/
        mock-sap.pid     the server's PID (removed by down)
        mock-sap.log     its output
        mock-sap.db      SQLite: sales orders survive a restart (CSRF tokens do not)
        endpoint.json    the port and options it was started with, for status and up()

Started as ``python -m mocksap --host 127.0.0.1 --port P --db <state_dir>/sap/mock-sap.db
--auth ORDERHUB:<password> --slow-ms S [--latency-ms L] [--error-rate R] -q`` (the
``mock-sap`` console script is the same entry point).

How mock-sap's failure modes are triggered (read from its README and ``mocksap/server.py``):

- **Per request**: a header ``sap-mock-scenario: <name>`` (or the query parameter of the same
  name). Not usable from a client under test, so the sandbox uses the rules below instead.
- **Rules** (``inject_fault``): ``POST /_mock/faults`` with ``match`` (a regex searched in the
  request path, e.g. ``A_SalesOrder`` or ``\\$batch``), ``method``, and either ``scenario``
  (one of the names below) or ``status`` (any HTTP status, with an optional ``message`` and
  ``delay_ms``), and ``count`` (the rule is spent after that many hits; 0 = forever).
  ``GET /_mock/faults`` lists rules with their hits, ``DELETE /_mock/faults`` clears them. A
  rule is checked before authentication, CSRF and the database: a faulted request wrote
  nothing. A rule with a ``message`` and no ``status`` only adds a ``sap-message`` warning,
  so never pass a message together with a scenario.
- **At start-up** (``up``): ``--latency-ms`` delays every request, ``--error-rate`` answers that
  fraction of requests with a 500 (from a random generator seeded by ``--seed``, so a given
  request sequence fails the same way every run), ``--slow-ms`` is the ``slow`` scenario's delay.

Scenarios: ``error`` 500 ``/IWBEP/CX_MGW_TECH_EXCEPTION``; ``busy`` 503 with ``Retry-After: 30``
("no dialog work process available"); ``lock`` 423 "Document is locked by user MOCKUSER";
``csrf`` 403 with ``x-csrf-token: Required`` (what an expired token gets); ``slow`` sleeps
``--slow-ms`` and then *serves the request* (a write arrives late); ``timeout`` sleeps 120 s and
then also serves it; ``precondition`` 412; ``auth`` 401; ``expired-token`` 401 for an OAuth
bearer token; ``forbidden`` 403; ``notfound`` 404. A CSRF token can also expire for real:
tokens live in the server's memory, so ``restart`` (down + up on the same SQLite file) keeps
every order and forgets every token, as an SAP session timeout does.

Gaps of mock-sap 0.22.0 the ERP user works around (the client and mapping document their side):
no schedule lines, so ``price_and_confirm`` writes the confirmed date into the item's
``RequestedDeliveryDate``; no tax fields, so tax is an item pricing element of condition
category ``D`` (taxes, SAP's KNTYP); ``OverallSDProcessStatus`` is read-only and never moves;
and a change to an item does not move the order's ``LastChangeDate``, so the ERP user touches
the header afterwards (re-pricing sets the pricing date), as SAP does on every item change.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import requests

from hub.errors import ConfigError
from localdev import process

SERVICE_PATH = "/sap/opu/odata/sap/API_SALES_ORDER_SRV"
#: The basic-authentication user the sandbox demands (and the demo's ERP connector uses).
USER = "ORDERHUB"
#: A sandbox password, not a secret: the server listens on 127.0.0.1 only.
PASSWORD = "sandbox-only"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: The ERP user's own HTTP calls; the sandbox answers in milliseconds.
_USER_TIMEOUT = 10.0
#: SAP condition category (KNTYP) of taxes.
TAX_CONDITION_CATEGORY = "D"
#: The output tax condition the clerk writes (MWST in classic SD, TTX1 in S/4HANA Cloud).
TAX_CONDITION_TYPE = "MWST"
SCENARIOS = ("error", "busy", "lock", "csrf", "slow", "timeout", "precondition", "auth",
             "expired-token", "forbidden", "notfound")


def _folder(state_dir: Path) -> Path:
    return state_dir / "sap"


def _pidfile(state_dir: Path) -> Path:
    return _folder(state_dir) / "mock-sap.pid"


def _database(state_dir: Path) -> Path:
    return _folder(state_dir) / "mock-sap.db"


def service_url(port: int) -> str:
    """The service root of API_SALES_ORDER_SRV on a sandbox listening on ``port``."""
    return f"http://127.0.0.1:{port}{SERVICE_PATH}"


def up(state_dir: Path, port: int, *, slow_ms: int = 3000, latency_ms: int = 0,
       error_rate: float = 0.0, seed: int = 42) -> str:
    """Start the sandbox unless it already runs; return the API_SALES_ORDER_SRV service root.

    A sandbox already running on ``state_dir`` is kept, on whatever port and options it was
    started with. Returns once ``$metadata`` answers.
    """
    folder = _folder(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    running = _running(state_dir)
    if running is not None:
        url = service_url(_endpoint(state_dir)["port"])
        _wait_answering(state_dir, running, url)
        return url
    if process.answers(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this ERP sandbox")
    cmd: list[str | Path] = [sys.executable, "-m", "mocksap", "--host", "127.0.0.1", "--port", str(port),
                             "--db", _database(state_dir), "--auth", f"{USER}:{PASSWORD}",
                             "--slow-ms", str(slow_ms), "--seed", str(seed), "-q"]
    if latency_ms:
        cmd += ["--latency-ms", str(latency_ms)]
    if error_rate:
        cmd += ["--error-rate", str(error_rate)]
    (folder / "endpoint.json").write_text(json.dumps(
        {"port": port, "slow_ms": slow_ms, "latency_ms": latency_ms, "error_rate": error_rate, "seed": seed}))
    pid = process.spawn(cmd, log=folder / "mock-sap.log", pidfile=_pidfile(state_dir))
    url = service_url(port)
    try:
        _wait_answering(state_dir, pid, url)
    except BaseException:  # a half-started sandbox is no use to anyone: leave no process behind
        process.stop_recorded(_pidfile(state_dir), timeout=STOP_TIMEOUT)
        raise
    return url


def down(state_dir: Path) -> list[int]:
    """Stop the sandbox (SIGTERM, then SIGKILL); return its PID. Its data stays in SQLite."""
    return process.stop_recorded(_pidfile(state_dir), marker=str(_database(state_dir)), timeout=STOP_TIMEOUT)


def restart(state_dir: Path) -> str:
    """Stop and start the sandbox on the same port and data: every order stays, every CSRF
    token the server handed out is forgotten (a real token expiry). Returns the service root."""
    options = _endpoint(state_dir)
    down(state_dir)
    port = options.pop("port")
    return up(state_dir, port, **options)


def status(state_dir: Path) -> process.ServerStatus:
    """Report whether the sandbox runs, and where."""
    pid = _running(state_dir)
    url = service_url(_endpoint(state_dir)["port"]) if pid is not None else None
    return process.ServerStatus("ERP sandbox (mock-sap)", _folder(state_dir), pid,
                                f"{url} (user {USER})" if url else None)


# --- the ERP's users ---------------------------------------------------------------------


def price_and_confirm(url: str, sales_order: str, *, unit_prices: Mapping[str, Decimal],
                      delivery_date: dt.date, tax_rate: Decimal | None = Decimal("19"),
                      plant: str | None = "1710") -> None:
    """Do what an order clerk does in the ERP: price each item (``unit_prices`` by item number,
    e.g. ``{"000010": Decimal("47.50")}``), confirm a delivery date, add output tax.

    The item's net amount is quantity x price; the confirmed date goes where mock-sap has room
    for it (the item's ``RequestedDeliveryDate``: it has no schedule lines); the tax is a
    pricing element of category D per item; finally the header's pricing date is set, which
    moves the order's change stamp as an item change does in SAP.
    """
    with _ErpUser(url) as erp:
        order = erp.get(f"A_SalesOrder('{sales_order}')", expand="to_Item")
        for item in order["to_Item"]["results"]:
            number = item["SalesOrderItem"]
            if number not in unit_prices:
                continue
            net = (Decimal(item["RequestedQuantity"]) * unit_prices[number]).quantize(Decimal("0.01"), ROUND_HALF_UP)
            item_path = f"A_SalesOrderItem(SalesOrder='{sales_order}',SalesOrderItem='{number}')"
            changes: dict[str, Any] = {"NetAmount": str(net), "RequestedDeliveryDate": _sap_date(delivery_date)}
            if plant:
                changes["Plant"] = plant
            erp.patch(item_path, changes)
            if tax_rate is not None:
                tax = (net * tax_rate / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
                erp.post(f"{item_path}/to_PricingElement", {
                    "ConditionType": TAX_CONDITION_TYPE, "ConditionCategory": TAX_CONDITION_CATEGORY,
                    "ConditionRateValue": str(tax_rate), "ConditionAmount": str(tax),
                    "ConditionCurrency": order["TransactionCurrency"],
                    "TransactionCurrency": order["TransactionCurrency"]})
        erp.patch(f"A_SalesOrder('{sales_order}')", {"PricingDate": _sap_date(dt.date.today())})


def delete_order(url: str, sales_order: str) -> None:
    """An ERP user deletes the sales order (mock-sap has no rejection reasons to cancel with)."""
    with _ErpUser(url) as erp:
        erp.delete(f"A_SalesOrder('{sales_order}')")


def ship(url: str, sales_order: str) -> str:
    """Ship everything still open on the order (``BAPI_OUTB_DELIVERY_CREATE_SLS``), which moves
    its ``OverallDeliveryStatus``; return the delivery number."""
    with _ErpUser(url) as erp:
        order = erp.get(f"A_SalesOrder('{sales_order}')", expand="to_Item")
        lines = [{"REF_DOC": sales_order, "REF_ITEM": item["SalesOrderItem"]} for item in order["to_Item"]["results"]]
        answer = erp.call_bapi("BAPI_OUTB_DELIVERY_CREATE_SLS", {"SALES_ORDER_ITEMS": lines})
    errors = [row["MESSAGE"] for row in answer.get("RETURN", []) if row.get("TYPE") in ("E", "A")]
    if errors or not answer.get("DELIVERY"):
        raise ConfigError(f"the ERP sandbox refused to ship {sales_order}: {'; '.join(errors) or answer}")
    return str(answer["DELIVERY"])


def sales_orders_with_text(url: str, text_id: str, text: str) -> list[str]:
    """Every sales order carrying ``text`` under the header text ``text_id``, read straight from
    the ERP (tests count with it: one hub order must be one sales order)."""
    with _ErpUser(url) as erp:
        quoted = text.replace("'", "''")
        rows = erp.get("A_SalesOrderText", filter=f"LongTextID eq '{text_id}' and LongText eq '{quoted}'")
    return sorted({row["SalesOrder"] for row in rows["results"]})


# --- failure modes -------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRule:
    """One of mock-sap's fault rules, as ``GET /_mock/faults`` lists it."""

    id: int
    #: Regex searched in the request path.
    match: str
    #: The HTTP method it applies to; None for any.
    method: str | None
    #: The scenario it plays (see the module docstring), or None for a plain status.
    scenario: str | None
    #: The status it answers with, when it is not a scenario.
    status: int | None
    #: Hits after which the rule is spent (0 = never).
    count: int
    #: Requests it has answered so far.
    hits: int


def inject_fault(url: str, *, match: str, method: str | None = None, scenario: str | None = None,
                 status: int | None = None, message: str | None = None, count: int = 1) -> FaultRule:
    """Make the next ``count`` requests whose path matches ``match`` fail (0 = until cleared).

    Give ``scenario`` (``error``, ``busy``, ``lock``, ``csrf``, ``slow``, ...) or ``status``
    (with an optional ``message``), not both.
    """
    if (scenario is None) == (status is None):
        raise ValueError("give a scenario or a status")
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"mock-sap has no scenario {scenario!r}; it has {', '.join(SCENARIOS)}")
    rule: dict[str, Any] = {"match": match, "count": count}
    if method:
        rule["method"] = method.upper()
    if scenario:
        rule["scenario"] = scenario  # a message here would turn the rule into a mere warning
    else:
        rule["status"] = status
        if message:
            rule["message"] = message
    return _fault(_control(url, "POST", "faults", rule))


def active_faults(url: str) -> list[FaultRule]:
    """The fault rules not yet spent, with their hits."""
    answer = _control(url, "GET", "faults")
    return [_fault(rule) for rule in answer["results"]]


def clear_faults(url: str) -> None:
    """Remove every fault rule."""
    _control(url, "DELETE", "faults")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the sandbox answered (``/_mock/requests``), newest first."""

    method: str
    path: str
    query: str
    status: int


def request_log(url: str, limit: int = 200) -> list[LoggedRequest]:
    """The last ``limit`` requests the sandbox answered, newest first (faulted ones included)."""
    answer = _control(url, "GET", f"requests?limit={limit}")
    return [LoggedRequest(row["method"], row["path"], row.get("query") or "", int(row["status"]))
            for row in answer["results"]]


# --- internals -----------------------------------------------------------------------------


def _running(state_dir: Path) -> int | None:
    return process.recorded_pid(_pidfile(state_dir), marker=str(_database(state_dir)))


def _endpoint(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((_folder(state_dir) / "endpoint.json").read_text())
    except (OSError, ValueError):
        raise ConfigError(f"the ERP sandbox in {_folder(state_dir)} has no endpoint.json: start it with up()") from None


def _wait_answering(state_dir: Path, pid: int, url: str) -> None:
    log = _folder(state_dir) / "mock-sap.log"

    def metadata_answers() -> bool:
        if not process.alive(pid):  # it will never answer: fail now, with its log
            raise ConfigError(f"mock-sap exited during start-up; end of {log}:\n{process.tail(log)}")
        try:
            return requests.get(f"{url}/$metadata", auth=(USER, PASSWORD), timeout=2.0).status_code == 200
        except requests.RequestException:
            return False

    if not process.wait_until(metadata_answers, START_TIMEOUT):
        raise ConfigError(f"mock-sap did not answer {url}/$metadata within {START_TIMEOUT:.0f} s; "
                          f"end of {log}:\n{process.tail(log)}")


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _control(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """mock-sap's own control plane (``/_mock``: not behind authentication, not an SAP API)."""
    response = requests.request(method, f"{_base(url)}/_mock/{path}", json=body, timeout=_USER_TIMEOUT)
    if response.status_code >= 400:
        raise ConfigError(f"mock-sap refused {method} /_mock/{path}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


def _fault(rule: dict[str, Any]) -> FaultRule:
    return FaultRule(id=int(rule["id"]), match=rule.get("match", ""), method=rule.get("method"),
                     scenario=rule.get("scenario"), status=rule.get("status"), count=int(rule.get("count", 0)),
                     hits=int(rule.get("hits", 0)))


def _sap_date(day: dt.date) -> str:
    """An Edm.DateTime in OData V2 JSON: milliseconds since the epoch, UTC midnight."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return f"/Date({int(midnight.timestamp() * 1000)})/"


class _ErpUser:
    """A person at the ERP: basic authentication, a CSRF token for writes, JSON both ways."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")
        self._session = requests.Session()
        self._session.auth = (USER, PASSWORD)
        self._session.headers["Accept"] = "application/json"
        self._token: str | None = None

    def __enter__(self) -> "_ErpUser":
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()

    def get(self, path: str, *, expand: str | None = None, filter: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("$expand", expand), ("$filter", filter)) if v}
        return self._checked(self._session.get(f"{self._url}/{path}", params=params, timeout=_USER_TIMEOUT))["d"]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._checked(self._session.post(f"{self._url}/{path}", json=body, headers=self._write_headers(),
                                                timeout=_USER_TIMEOUT))

    def patch(self, path: str, body: dict[str, Any]) -> None:
        self._checked(self._session.patch(f"{self._url}/{path}", json=body,
                                          headers={**self._write_headers(), "If-Match": "*"}, timeout=_USER_TIMEOUT))

    def delete(self, path: str) -> None:
        self._checked(self._session.delete(f"{self._url}/{path}", headers={**self._write_headers(), "If-Match": "*"},
                                           timeout=_USER_TIMEOUT))

    def call_bapi(self, function: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self._session.post(f"{_base(self._url)}/sap/bc/rfc/{function}", json=params,
                                      headers=self._write_headers(), timeout=_USER_TIMEOUT)
        return self._checked(response)

    def _write_headers(self) -> dict[str, str]:
        if self._token is None:
            fetched = self._session.get(f"{self._url}/", headers={"X-CSRF-Token": "Fetch"}, timeout=_USER_TIMEOUT)
            self._checked(fetched)
            self._token = fetched.headers["x-csrf-token"]
        return {"X-CSRF-Token": self._token}

    @staticmethod
    def _checked(response: requests.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ConfigError(f"the ERP sandbox refused {response.request.method} {response.url}: "
                              f"{response.status_code} {response.text[:300]}")
        return response.json() if response.content and "json" in response.headers.get("content-type", "") else {}
