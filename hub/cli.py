"""orderhub: the order-integration hub's command line.

Each sub-command imports its module only when it runs, so ``orderhub kafka up`` does not
pay for the stream runtime, and nothing happens at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import runpy
import sys
from typing import Any, Callable

from hub.errors import InvalidInput, OrderhubError
from hub.settings import PROJECT_DIR, get_settings


def _local(action: str, what: str, up: Callable[[], str], down: Callable[[], list[int]],
           status: Callable[[], Any]) -> int:
    """``up | down | status`` of a local server this project runs for its users (Kafka, PostgreSQL)."""
    if action == "up":
        print(up())
        return 0
    if action == "down":
        stopped = down()
        print(f"stopped {what}" + (f": pids {stopped}" if stopped else " (none was running)"))
        return 0
    report = status()
    print(report.text())
    return 0 if report.running else 3


def _kafka(args: argparse.Namespace) -> int:
    from localdev import kafka as localkafka

    settings = get_settings()

    def up() -> str:
        bootstrap = localkafka.up(settings, nodes=args.nodes)
        if bootstrap != settings.bootstrap_servers:
            print(f"point orderhub at it: export ORDERHUB_BOOTSTRAP_SERVERS={bootstrap}", file=sys.stderr)
        return bootstrap
    return _local(args.action, "local Kafka", up, lambda: localkafka.down(settings),
                  lambda: localkafka.status(settings))


def _topics(args: argparse.Namespace) -> int:
    from hub import topics

    settings = get_settings()
    declared = topics.load_declarations(settings.topics_file, settings.schemas_dir, settings.topic_namespace)
    if args.action == "apply":
        changes = asyncio.run(topics.apply(settings, declared))
        print("\n".join(changes) if changes else "topics are as declared; nothing to do")
        return 0
    drift = asyncio.run(topics.check(settings, declared))
    if drift:
        print("\n".join(drift))
        return 1
    print(f"{len(declared)} topics match {settings.topics_file.name}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from hub.serde.compat import check_repository

    settings = get_settings()
    problems = check_repository(args.dir or settings.schemas_dir)
    if problems:
        print("\n".join(problems))
        return 1
    print("every schema version is backward and forward compatible with the previous one")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from hub.streams.app import run_worker

    return run_worker(get_settings())


def _alerts(args: argparse.Namespace) -> int:
    from hub.streams.alerts import run_alerts

    return asyncio.run(run_alerts(get_settings()))


def _lag(args: argparse.Namespace) -> int:
    """``orderhub lag``: the lag exporter; ``--once``: the lag as a table, then exit."""
    from hub.observability.lag import lag_table, measure_lag, run_lag

    settings = get_settings()
    if args.once:
        print(lag_table(asyncio.run(measure_lag(settings))))
        return 0
    return asyncio.run(run_lag(settings))


def _notify(args: argparse.Namespace) -> int:
    from hub.streams.notify import run_notify

    return asyncio.run(run_notify(get_settings()))


def _api(args: argparse.Namespace) -> int:
    from hub.api.app import serve
    from hub.logs import configure

    settings = get_settings()
    configure(settings)
    serve(settings)
    return 0


def _users(args: argparse.Namespace) -> int:
    """``orderhub users add|role|disable|enable|password|list``: the API's local users."""
    import getpass

    from hub.api.users import Users

    users = Users(get_settings().read_model_url)
    try:
        if args.action == "list":
            for user in users.list():
                print(f"{user.username:<24} {', '.join(user.roles):<40} {'disabled' if user.disabled else 'enabled'}")
            return 0
        if not args.username:
            raise InvalidInput(f"orderhub users {args.action} needs a user name")
        if args.action in ("add", "password"):
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {args.username}: ")
            if args.action == "add":
                user = users.add(args.username, password, args.roles)
                print(f"added {user.username} with roles {', '.join(user.roles)}")
            else:
                users.set_password(args.username, password)
                print(f"password of {args.username} changed")
        elif args.action == "role":
            user = users.set_roles(args.username, args.roles)
            print(f"{user.username} now has the roles {', '.join(user.roles)}")
        else:
            user = users.set_disabled(args.username, args.action == "disable")
            print(f"{user.username} is {'disabled' if user.disabled else 'enabled'}")
        return 0
    finally:
        users.close()


def _notifications(args: argparse.Namespace) -> int:
    """What the notifier's outbox holds: pending, delivered, undeliverable (with why); ``retry`` sends
    undeliverable ones again (the notifier picks them up)."""
    import datetime as dt
    import json

    from hub.notify.outbox import Outbox
    from hub.streams.notify import outbox_path

    path = outbox_path(get_settings())
    if not path.is_file():
        raise InvalidInput(f"no notifier outbox at {path}: `orderhub notify` has not run with these settings")
    outbox = Outbox(path)
    try:
        if args.action == "retry":
            if not args.ids and not args.all:
                raise InvalidInput("name the notification ids to send again, or --all")
            count = outbox.retry(None if args.all else args.ids)
            print(f"{count} undeliverable notification(s) pending again")
            return 0
        found = outbox.listing(state=args.state, order_id=args.order, limit=args.limit)
        if args.json:
            print(json.dumps([{**n.__dict__} for n in found], default=str, indent=2))
            return 0
        counts = outbox.counts()
        print(", ".join(f"{state}: {count}" for state, count in counts.items()))
        for n in found:
            when = dt.datetime.fromtimestamp(n.created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{when}  {n.state:<13} {n.id}  {n.kind:<17} {n.order_number or '-':<16} -> {n.subscriber} "
                  f"({n.channel} {n.target}), {n.attempts} attempt(s)")
            print(f"    {n.message.get('subject', '')}")
            if n.last_error:
                print(f"    last error: {n.last_error}")
        return 0
    finally:
        outbox.close()


def _up(args: argparse.Namespace) -> int:
    """The main job on the embedded default: everything on this machine, until Ctrl-C."""
    import os

    from localdev import up

    # a cluster named in the environment is used as it is; otherwise the local one is started
    return up.run(get_settings(), local_kafka="ORDERHUB_BOOTSTRAP_SERVERS" not in os.environ)


def _demo(args: argparse.Namespace) -> int:
    from localdev import demo

    return demo.run(get_settings())


def _orders(args: argparse.Namespace) -> int:
    from hub import readmodel

    return _about_order({"show": readmodel.show_order_text, "history": readmodel.history_text,
                         "conflicts": readmodel.conflicts_text}[args.action], args.order)


def _trace(args: argparse.Namespace) -> int:
    from hub.trace import trace_text

    return _about_order(trace_text, args.order)


def _about_order(text: Any, order: str) -> int:
    """Print what ``text(settings, order)`` says of an order; an order not found is said on stderr (exit 1)."""
    from hub import readmodel

    try:
        print(text(get_settings(), order))
    except readmodel.OrderNotFound as exc:
        print(f"orderhub: {exc.args[0]}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from hub import readmodel

    print(readmodel.lead_times_text(get_settings(), kind=args.kind, weeks=args.weeks, until=args.until,
                                    as_json=args.json))
    return 0


def _postgres(args: argparse.Namespace) -> int:
    from localdev import postgres as localpg

    settings = get_settings()
    return _local(args.action, "local PostgreSQL", lambda: localpg.up(settings, port=args.port or localpg.DEFAULT_PORT),
                  lambda: localpg.down(settings), lambda: localpg.status(settings))


def _propose(args: argparse.Namespace) -> int:
    from hub.propose import propose_file

    return propose_file(get_settings(), args.file, wait_s=None if args.no_wait else args.timeout)


def _connectors(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hub.sdk import registry

    if args.action == "list":
        print(registry.describe(registry.installed()))
        return 0
    if args.action == "new":
        from hub.sdk.scaffold import new_connector

        if not args.name:
            raise InvalidInput("orderhub connectors new NAME: give the connector's name")
        target = Path(args.dir or f"orderhub-{args.name.replace('_', '-')}")
        for path in new_connector(args.name, target):
            print(f"wrote {path}")
        print(f"next: pip install -e {target} && pytest {target / 'tests'}")
        return 0
    return _run_connectors(Path(args.file) if args.file else get_settings().connectors_file, args.name)


def _run_connectors(path: Any, only: str | None) -> int:
    """Run the declared connector instances (or one of them) in this process until Ctrl-C."""
    import signal

    from hub.logs import configure
    from hub.sdk import ConnectorRuntime, registry

    settings = get_settings()
    configure(settings)
    instances = [i for i in registry.load_instances(path) if only is None or i.name == only]
    if not instances:
        raise InvalidInput(f"{path} declares no instance {only!r}" if only else f"{path} declares no connectors")
    from hub.observability import metrics

    metrics.serve(settings, "connectors")

    async def run() -> None:
        runtimes = [ConnectorRuntime(i.build(), instance=i.name, settings=settings) for i in instances]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: [r.stop() for r in runtimes])
        await asyncio.gather(*(r.run() for r in runtimes))
    asyncio.run(run())
    return 0


def _bench(args: argparse.Namespace) -> int:
    sys.argv = [f"bench/{args.which}.py", *args.bench_args]
    runpy.run_path(str(PROJECT_DIR / "bench" / f"{args.which}.py"), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``orderhub`` command."""
    parser = argparse.ArgumentParser(prog="orderhub", description=__doc__.splitlines()[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run a real local Apache Kafka (KRaft) from Maven Central")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument("--nodes", type=int, choices=[1, 3], default=1, help="combined broker+controller nodes")
    kafka.set_defaults(func=_kafka)

    postgres = sub.add_parser("postgres", help="a local PostgreSQL (Debian's packages) for the read model")
    postgres.add_argument("action", choices=["up", "down", "status"])
    postgres.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 for up (default 55432)")
    postgres.set_defaults(func=_postgres)

    topics = sub.add_parser("topics", help="bring the cluster's topics up to topics.yaml")
    topics.add_argument("action", choices=["apply", "check"])
    topics.set_defaults(func=_topics)

    schemas = sub.add_parser("schemas", help="schema compatibility gate")
    schemas.add_argument("action", choices=["check"])
    schemas.add_argument("--dir", default=None, help="schemas folder (default: the repository's)")
    schemas.set_defaults(func=_schemas)

    up = sub.add_parser("up", help="the main job: Kafka, the engine, the CRM/ERP/MES connectors and local "
                                   "sandboxes of those systems, until Ctrl-C")
    up.set_defaults(func=_up)

    demo = sub.add_parser("demo", help="push one order from won opportunity to completed through the hub `up` runs")
    demo.set_defaults(func=_demo)

    worker = sub.add_parser("worker", help="run the canonical order engine and the read-model projector (Ctrl-C or "
                                           "SIGTERM commits and stops)")
    worker.set_defaults(func=_worker)

    alerts = sub.add_parser("alerts", help="watch due dates: raise and clear the due-date alerts of workflow.yaml "
                                           "(Ctrl-C or SIGTERM stops)")
    alerts.set_defaults(func=_alerts)

    api = sub.add_parser("api", help="serve the REST API (and the web app) on ORDERHUB_API_HOST:ORDERHUB_API_PORT")
    api.set_defaults(func=_api)
    users = sub.add_parser("users", help="the API's local users: add, role, disable, enable, password, list")
    users.add_argument("action", choices=["add", "role", "disable", "enable", "password", "list"])
    users.add_argument("username", nargs="?")
    users.add_argument("--role", dest="roles", action="append", default=[],
                       help="a HUB role (repeat for several): sales, planner, sales_manager, plant_manager, ...")
    users.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    users.set_defaults(func=_users)

    notifier = sub.add_parser("notify", help="tell people: deliver the notifications of workflow.yaml (e-mail, signed "
                              "webhooks, MQTT) for status changes, approvals waiting, alerts, conflicts, rejections")
    notifier.set_defaults(func=_notify)
    lag = sub.add_parser("lag", help="consumer lag of every hub group (messages and seconds) and the read model's "
                         "backlogs as Prometheus metrics; --once prints the lag as a table")
    lag.add_argument("--once", action="store_true", help="measure once, print a table, exit")
    lag.set_defaults(func=_lag)
    notes = sub.add_parser("notifications", help="the notifier's outbox: pending, delivered and undeliverable "
                           "notifications with why; retry undeliverable ones")
    notes.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    notes.add_argument("ids", nargs="*", help="retry: the notification ids to send again")
    notes.add_argument("--all", action="store_true", help="retry: every undeliverable notification")
    notes.add_argument("--state", choices=["pending", "delivered", "undeliverable"], default=None)
    notes.add_argument("--order", default=None, help="one order's (id or number)")
    notes.add_argument("--limit", type=int, default=50)
    notes.add_argument("--json", action="store_true")
    notes.set_defaults(func=_notifications)

    orders = sub.add_parser("orders", help="read orders from the read model")
    orders.add_argument("action", choices=["show", "history", "conflicts"])
    orders.add_argument("order", help="order id, order number or external reference (SYSTEM/Type/id)")
    orders.set_defaults(func=_orders)
    trace = sub.add_parser("trace", help="one order's whole flow across systems in time order, with its correlation id")
    trace.add_argument("order", help="order id, order number or external reference (SYSTEM/Type/id)")
    trace.set_defaults(func=_trace)

    import datetime as dt  # for --until only; the report's modules load when it runs

    def weeks(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"a whole number of weeks, at least 1, not {text!r}")
        return int(text)

    report = sub.add_parser("report", help="reports from the read model: lead times per ISO week")
    report.add_argument("which", choices=["lead-times"])
    report.add_argument("--kind", choices=["release", "conflict", "alert", "rejection"], default=None,
                        help="one kind only (default: every kind)")
    report.add_argument("--weeks", type=weeks, default=12, help="ISO weeks up to --until's (default 12)")
    report.add_argument("--until", type=dt.date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                        help="the report's last day, UTC (default today); later ends count as open")
    report.add_argument("--json", action="store_true", help="JSON for dashboards, durations in seconds")
    report.set_defaults(func=_report)

    propose = sub.add_parser("propose", help="send one change proposal (JSON) and print the hub's decision")
    propose.add_argument("file", help="the proposal as JSON (see deploy/local/examples/); - reads standard input")
    propose.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the decision")
    propose.add_argument("--no-wait", action="store_true", help="send and return without waiting")
    propose.set_defaults(func=_propose)

    connectors = sub.add_parser("connectors", help="list installed connectors, write a new one, run declared ones")
    connectors.add_argument("action", choices=["list", "new", "run"])
    connectors.add_argument("name", nargs="?", help="new: the connector's name; run: one instance only")
    connectors.add_argument("--dir", default=None, help="new: the folder to write (default ./orderhub-NAME)")
    connectors.add_argument("--file", default=None,
                            help="run: the declared instances (default: ORDERHUB_CONNECTORS_FILE, ./connectors.yaml)")
    connectors.set_defaults(func=_connectors)

    bench = sub.add_parser("bench", help="run a benchmark from bench/")
    bench.add_argument("which", choices=["engine", "connectors"])
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``orderhub`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OrderhubError as exc:
        print(f"orderhub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
