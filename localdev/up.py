"""``orderhub up``: the whole hub on one machine, on the embedded default, until Ctrl-C.

What it starts, in order, each recorded so that Ctrl-C stops exactly what was started here:

1. Apache Kafka (KRaft) on 127.0.0.1, unless ``ORDERHUB_BOOTSTRAP_SERVERS`` names a cluster;
   then ``topics apply``.
2. The sandboxes of the outside systems: the Salesforce sandbox (CRM, TLS), mock-sap (ERP),
   Mosquitto and the OPC UA ISA-95 MES (its shop floor reports over MQTT), and a mail sink
   (aiosmtpd, keeping a Maildir) for notification e-mails.
3. The engine (``orderhub worker``: decide + read model), the due-date alerts (``orderhub
   alerts``), the notifier (``orderhub notify``: e-mail to the sink, displays over Mosquitto) and
   the connectors (``orderhub connectors run`` over a generated ``connectors.yaml`` pointing at
   the sandboxes) and the REST API (``orderhub api``), each a child process ended by its PID.

``stack.json`` in ``<state_dir>/up/`` says where everything is; ``orderhub demo`` reads it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import SecretStr

from hub.errors import ConfigError
from hub.settings import Settings
from localdev import process

#: The hub's own processes ``up`` starts, each with its log and pid file in ``<state_dir>/up/``.
CHILDREN = ("engine", "alerts", "notify", "connectors", "api", "lag")
#: The process name a child serves its metrics under, where it is not the child's own
#: (``hub.observability.metrics.PROCESSES``; the rules and dashboards select by it).
METRICS_PROCESS = {"engine": "worker"}

#: Ports of the sandboxes on 127.0.0.1 (fixed, so a person can point a browser or a client at them).
PORTS = {"crm": 18443, "crm_webhook": 18081, "erp": 18082, "mes": 14840, "mqtt": 11883, "smtp": 18025, "api": 8080,
         # where each child serves /metrics (``deploy/prometheus/local.yml`` scrapes them)
         "metrics_lag": 9400, "metrics_engine": 9401, "metrics_alerts": 9402, "metrics_notify": 9403,
         "metrics_connectors": 9404, "metrics_api": 9405}
WEBHOOK_SECRET = "orderhub-sandbox-webhook-secret"


@dataclass(frozen=True)
class Stack:
    """Where the running hub's parts are (``stack.json``)."""

    #: Kafka bootstrap servers.
    bootstrap: str
    #: Whether ``up`` started that Kafka (and stops it again).
    kafka_started: bool
    #: The read model's URL.
    read_model: str
    #: The Salesforce sandbox: instance URL, session id, CA file.
    crm: dict[str, Any]
    #: mock-sap: the API_SALES_ORDER_SRV service URL and its user.
    erp: dict[str, Any]
    #: The MES: opc.tcp URL and the MQTT port.
    mes: dict[str, Any]
    #: Log files of the engine and the connectors.
    logs: dict[str, str]
    #: The mail sink notifications go to: its SMTP port and the folder ``mailsink.messages`` reads.
    mail: dict[str, Any] = field(default_factory=dict)
    #: The REST API's base URL (``orderhub api``).
    api: str = ""
    #: Each child's metrics URL, by the process name it serves them under (METRICS_PROCESS).
    metrics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, settings: Settings) -> "Stack":
        """The stack ``orderhub up`` started (ConfigError when none runs)."""
        path = folder(settings) / "stack.json"
        if not path.is_file():
            raise ConfigError(f"no running hub found ({path} is missing): start it with `orderhub up`")
        return cls(**json.loads(path.read_text()))


def folder(settings: Settings) -> Path:
    """Where ``up`` keeps its files."""
    return settings.state_dir / "up"


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process (the engine, the connectors) these settings."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERHUB_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):  # model_dump keeps secrets masked: the child gets the real value
            value = value.get_secret_value()
        env[f"ORDERHUB_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["ORDERHUB_DATABASE_URL"] = settings.read_model_url
    return env


def start(settings: Settings, say: Callable[[str], None] = print, *, local_kafka: bool = True,
          ports: dict[str, int] | None = None) -> tuple[Stack, Callable[[], None]]:
    """Start everything; return the stack and the function that stops what was started (in reverse).

    ``local_kafka``: start the local broker unless it runs (False: use ``bootstrap_servers`` as it is).
    ``ports``: the sandboxes' ports (``PORTS`` by default).
    """
    ports = {**PORTS, **(ports or {})}
    from hub import topics
    from localdev import kafka, mosquitto
    from localdev.sandboxes import mailsink, mes, salesforce, sap

    home = folder(settings)
    home.mkdir(parents=True, exist_ok=True)
    sandboxes = settings.state_dir / "sandboxes"
    stops: list[Callable[[], Any]] = []

    def stop_all() -> None:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest whatever one of them says
                say(f"  (stopping: {exc})")
        stops.clear()
        (home / "stack.json").unlink(missing_ok=True)

    try:
        kafka_started = local_kafka
        if kafka_started:
            kafka_started = not kafka.status(settings).running
            bootstrap = kafka.up(settings)
            say(f"Kafka        {bootstrap}" + ("" if kafka_started else " (already running, left running)"))
            if kafka_started:
                stops.append(lambda: say(f"stopped Kafka: pids {kafka.down(settings)}"))
            # the local broker answers where it was started (ORDERHUB_LOCAL_KAFKA_PORT): use that everywhere
            settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
        else:
            say(f"Kafka        {settings.bootstrap_servers} (configured)")
        declared = topics.load_declarations(settings.topics_file, settings.schemas_dir, settings.topic_namespace)
        changed = topics_apply(settings, declared)
        say(f"topics       {len(declared)} declared" + (f", {len(changed)} changes applied" if changed else ", as declared"))

        crm = salesforce.up(sandboxes, ports["crm"], webhook_urls=[f"http://127.0.0.1:{ports['crm_webhook']}/crm/events"],
                            webhook_secret=WEBHOOK_SECRET)
        stops.append(lambda: salesforce.down(sandboxes))
        say(f"CRM sandbox  {crm.instance_url} (Salesforce REST over TLS, CA {crm.ca_file})")
        erp_url = sap.up(sandboxes, ports["erp"])
        stops.append(lambda: sap.down(sandboxes))
        say(f"ERP sandbox  {erp_url} (mock-sap, user {sap.USER})")
        mqtt_url = mosquitto.up(sandboxes, ports["mqtt"])
        stops.append(lambda: mosquitto.down(sandboxes))
        opc_url = mes.up(sandboxes, ports["mes"], mqtt_port=ports["mqtt"])
        stops.append(lambda: mes.down(sandboxes))
        say(f"MES sandbox  {opc_url} (OPC UA ISA-95 Job Control), shop floor over {mqtt_url}")
        smtp = mailsink.up(sandboxes, ports["smtp"])
        stops.append(lambda: mailsink.down(sandboxes))
        say(f"mail sink    smtp://{smtp} (notification e-mails, kept in {mailsink.maildir(sandboxes)})")
        # the notifier tells people through the sandboxes: e-mail to the sink, displays over the MES's broker
        settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": ports["smtp"],
                                               "mqtt_host": "127.0.0.1", "mqtt_port": ports["mqtt"],
                                               "api_host": "127.0.0.1", "api_port": ports["api"]})

        stack = Stack(
            bootstrap=settings.bootstrap_servers, kafka_started=kafka_started, read_model=settings.read_model_url,
            crm={"instance_url": crm.instance_url, "session_id": crm.session_id, "ca_file": str(crm.ca_file),
                 "webhook_port": ports["crm_webhook"], "webhook_secret": WEBHOOK_SECRET},
            erp={"url": erp_url, "user": sap.USER, "password": sap.PASSWORD},
            mes={"opc_url": opc_url, "mqtt_host": "127.0.0.1", "mqtt_port": ports["mqtt"]},
            logs={name: str(home / f"{name}.log") for name in CHILDREN},
            mail={"smtp_port": ports["smtp"], "state_dir": str(sandboxes), "maildir": str(mailsink.maildir(sandboxes))},
            api=f"http://127.0.0.1:{ports['api']}",
            metrics={METRICS_PROCESS.get(name, name): f"http://127.0.0.1:{ports[f'metrics_{name}']}/metrics"
                     for name in CHILDREN})
        (home / "connectors.yaml").write_text(yaml.safe_dump(connectors_yaml(stack), sort_keys=False))
        for name, argv in (("engine", ["worker"]), ("alerts", ["alerts"]), ("notify", ["notify"]),
                           ("connectors", ["connectors", "run", "--file", str(home / "connectors.yaml")]),
                           ("api", ["api"]), ("lag", ["lag"])):
            env = {**child_environment(settings), "ORDERHUB_METRICS_PORT": str(ports[f"metrics_{name}"])}
            pid = process.spawn([sys.executable, "-m", "hub.cli", *argv], log=home / f"{name}.log",
                                pidfile=home / f"{name}.pid", env=env)
            stops.append(lambda name=name: process.stop_recorded(home / f"{name}.pid", timeout=40))
            say(f"{name:<12} pid {pid}, log {home / f'{name}.log'}")
        (home / "stack.json").write_text(json.dumps(asdict(stack), indent=2))
        return stack, stop_all
    except BaseException:
        stop_all()
        raise


def topics_apply(settings: Settings, declared: list) -> list[str]:
    """``topics apply`` from synchronous code."""
    import asyncio

    from hub import topics

    return asyncio.run(topics.apply(settings, declared))


def connectors_yaml(stack: Stack) -> dict[str, Any]:
    """The connector instances of the embedded default, pointed at the sandboxes."""
    from hub.sdk.registry import installed

    kinds = installed()
    declared = []
    if "crm" in kinds:
        declared.append({"name": "crm-sandbox", "kind": "crm", "config": {
            "instance_url": stack.crm["instance_url"], "session_id": stack.crm["session_id"],
            "ca_file": stack.crm["ca_file"], "webhook_secret": stack.crm["webhook_secret"],
            "webhook_port": stack.crm["webhook_port"], "poll_interval_s": 30}})
    if "erp" in kinds:
        declared.append({"name": "erp-sandbox", "kind": "erp", "config": {
            "service_url": stack.erp["url"], "user": stack.erp["user"], "password": stack.erp["password"],
            "poll_interval_s": 2}})
    if "mes" in kinds:
        declared.append({"name": "mes-sandbox", "kind": "mes", "config": {
            "opc_url": stack.mes["opc_url"], "mqtt_host": stack.mes["mqtt_host"], "mqtt_port": stack.mes["mqtt_port"],
            "poll_interval_s": 1}})
    return {"connectors": declared}


def run(settings: Settings, *, local_kafka: bool) -> int:
    """The command: start everything, say where to look, wait for Ctrl-C (or a child's death), stop it all."""
    stack, stop_all = start(settings, local_kafka=local_kafka)
    home = folder(settings)
    print(f"\nread model   {stack.read_model}\n"
          "the hub is up. In another terminal:\n"
          "  orderhub demo                     an order from won opportunity to completed, step by step\n"
          "  orderhub orders show ORDER        / history ORDER / conflicts ORDER\n"
          f"  {stack.api}/api/docs     the REST API (log in as a user `orderhub users add` made)\n"
          "  orderhub notifications            what the notifier sent, and what it could not\n"
          "  orderhub lag --once               how far behind each consumer group is\n"
          f"metrics: {', '.join(stack.metrics.values())}\n"
          f"logs: {', '.join(stack.logs.values())}\n"
          "Ctrl-C stops everything orderhub up started.")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    died = None
    while not stopped.wait(1.0):
        for name in CHILDREN:
            if process.recorded_pid(home / f"{name}.pid") is None:
                died = name
                stopped.set()
    if died:
        print(f"\n{died} exited; end of its log:\n{process.tail(home / f'{died}.log', 30)}", file=sys.stderr)
    print("\nstopping ...")
    stop_all()
    print("stopped everything orderhub up started")
    return 1 if died else 0
