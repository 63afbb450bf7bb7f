"""deploy/: the compose file, the Kubernetes manifests and the image, checked with the real tools
this machine has (no Docker engine, no cluster):

1. the compose file against the Compose Specification's JSON schema (check-jsonschema's vendored
   copy); every Prometheus config with ``promtool check config``, the hub's alert rules beside it;
2. the Kustomize folders rendered by ``kubectl kustomize``, every rendered Kubernetes object against
   the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail);
3. what no schema knows: every hub process starts an ``orderhub`` command the CLI accepts, every
   ``ORDERHUB_`` variable is a setting, every process is scraped under the label the rules use,
   the Strimzi cluster is the one the hub's bootstrap address names, the Kafka image is the version
   the hub is tested with, and the image gets the files the hub reads (a wheel built from a clean
   copy holds the web app, the templates and the migrations' template).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.cli import build_parser
from hub.observability.metrics import PROCESSES
from hub.settings import PROJECT_DIR, Settings

DEPLOY = PROJECT_DIR / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
BIN = Path(sys.executable).parent
KUBERNETES = "1.32.0"
#: The ``${VAR}`` secrets deploy/local/connectors.example.yaml names: the connectors' environment.
CONNECTOR_SECRETS = set(re.findall(r"\$\{(\w+)\}", (DEPLOY / "local" / "connectors.example.yaml").read_text()))


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """A tool's output; its failure (with what it said) fails the test."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def setting_names() -> set[str]:
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name.upper()}" for name in Settings.model_fields}


def hub_command(argv: list[str]) -> None:
    """``argv`` must be an orderhub command the CLI parses."""
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"orderhub {' '.join(argv)} is not a command the CLI accepts")


def unknown_variables(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("ORDERHUB_")} - setting_names() - CONNECTOR_SECRETS


# --- compose ---------------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_is_valid_by_the_compose_specification():
    out = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert "ok" in out


def test_compose_runs_every_hub_process_as_an_orderhub_command_with_real_settings():
    services = compose()["services"]
    hub = {name: s for name, s in services.items() if s.get("image", "").startswith("orderhub:")}
    for service in hub.values():
        hub_command(service["command"])
    scraped = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t.split(":")[0]: group["labels"]["process"]
               for job in scraped for group in job["static_configs"] for t in group["targets"]}
    # every long-running hub process is scraped, labelled by what it runs (the rules' process label)
    assert set(targets) == set(hub) - {"topics"}
    assert {targets[name]: hub[name]["command"][0] for name in targets} == {p: p for p in PROCESSES} | {
        "connectors": "connectors"}
    assert all(job["job_name"] == "orderhub" for job in scraped)
    # two workers: two names, two volumes (each keeps its own table state)
    workers = [s for s in hub.values() if s["command"] == ["worker"]]
    assert len(workers) == 2
    assert len({w["environment"]["ORDERHUB_WORKER_NAME"] for w in workers}) == 2
    assert len({w["volumes"][0].split(":")[0] for w in workers}) == 2
    variables = {k for s in hub.values() for k in s.get("environment", {})}
    example = {line.split("=")[0] for line in (DEPLOY / "compose" / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert not unknown_variables(variables | example)


def test_compose_runs_the_kafka_the_hub_is_tested_with_on_three_kraft_nodes():
    services = compose()["services"]
    kafkas = {n: s for n, s in services.items() if s.get("image", "").startswith("apache/kafka:")}
    assert len(kafkas) == 3
    default = Settings.model_fields["kafka_version"].default
    assert {s["image"] for s in kafkas.values()} == {f"apache/kafka:${{KAFKA_VERSION:-{default}}}"}
    voters = {s["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for s in kafkas.values()}
    assert voters == {",".join(f"{s['environment']['KAFKA_NODE_ID']}@{n}:9093" for n, s in kafkas.items())}
    bootstrap = services["api"]["environment"]["ORDERHUB_BOOTSTRAP_SERVERS"]
    assert bootstrap == ",".join(f"{n}:9092" for n in kafkas)


def test_compose_mounts_only_files_of_this_checkout_and_the_users_connectors_file():
    compose_dir = COMPOSE.parent
    mounts = [v.split(":")[0] for s in compose()["services"].values() for v in s.get("volumes", [])
              if v.startswith(".")]
    assert mounts
    missing = [m for m in mounts if not (compose_dir / m).exists()]
    assert missing == ["./connectors.yaml"]  # the user's own (README: copied from the example)
    grafana = compose()["services"]["grafana"]["volumes"]
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/orderhub.yml").read_text())
    assert f"../grafana/dashboards:{provisioned['providers'][0]['options']['path']}:ro" in grafana
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("config", ["compose/prometheus.yml", "prometheus/local.yml", "k8s/prometheus.yml"])
def test_every_prometheus_config_passes_promtool_with_the_hubs_rules(config, tmp_path):
    text = (DEPLOY / config).read_text()
    if config.startswith("k8s/"):
        # Debian's Prometheus is built without Kubernetes discovery: promtool checks everything else
        # (relabelling, rules) with one static target where the pods would be discovered
        parsed = yaml.safe_load(text)
        job = parsed["scrape_configs"][0]
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["orderhub"]}}]
        job["static_configs"] = [{"targets": ["orderhub-worker-0:9400"]}]
        text = yaml.safe_dump(parsed)
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")
    out = run("promtool", "check", "config", tmp_path / "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


# --- Kubernetes ------------------------------------------------------------------------------------

def rendered(folder: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders from deploy/k8s/<folder>."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with its built-in Kustomize) is needed to render deploy/k8s")
    return [d for d in yaml.safe_load_all(run("kubectl", "kustomize", DEPLOY / "k8s" / folder)) if d]


def test_the_hubs_kubernetes_objects_are_valid_by_the_kubernetes_schemas(tmp_path):
    objects = rendered("hub")
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert kinds == sorted([
        "Namespace/orderhub", "ConfigMap/" + next(o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"),
        "Job/orderhub-topics", "StatefulSet/orderhub-worker", "Service/orderhub-worker", "Deployment/orderhub-alerts",
        "StatefulSet/orderhub-notify", "StatefulSet/orderhub-connectors", "Service/orderhub-crm-webhook",
        "Deployment/orderhub-api", "Service/orderhub-api", "Deployment/orderhub-lag"])
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES, path)


def test_every_hub_pod_runs_an_orderhub_command_with_real_settings_and_is_scraped_as_its_process():
    objects = rendered("hub")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    components = {}
    for workload in workloads:
        pod = workload["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        hub_command(container["args"])
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        components[component] = container["args"][0]
        refs = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
        assert refs == [config["metadata"]["name"], "orderhub-secrets"]  # the generated name, hash and all
        assert not unknown_variables({e["name"] for e in container.get("env", [])})
        if component != "topics":
            assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9400"}
            assert {"name": "metrics", "containerPort": 9400} in container["ports"]
    assert components == {p: p for p in PROCESSES} | {"topics": "topics"}
    assert not unknown_variables(set(config["data"]))
    # the image runs as a numeric user, so runAsNonRoot can be checked by the kubelet
    assert re.search(r"^USER \d+$", (DEPLOY / "container" / "Dockerfile").read_text(), re.M)


def test_the_strimzi_kafka_is_the_one_the_hub_bootstraps_from():
    kafka = rendered("kafka")
    cluster = next(o for o in kafka if o["kind"] == "Kafka")
    pool = next(o for o in kafka if o["kind"] == "KafkaNodePool")
    assert {o["apiVersion"] for o in kafka} == {"kafka.strimzi.io/v1"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"] and pool["spec"]["replicas"] == 3
    # topics.yaml's replication (3, min.insync.replicas 2) fits the node count
    assert cluster["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    config = next(o for o in rendered("hub") if o["kind"] == "ConfigMap")
    listener = next(x for x in cluster["spec"]["kafka"]["listeners"] if not x["tls"])
    namespace = cluster["metadata"]["namespace"]
    assert config["data"]["ORDERHUB_BOOTSTRAP_SERVERS"] == (
        f"{cluster['metadata']['name']}-kafka-bootstrap.{namespace}.svc:{listener['port']}")


# --- the image -------------------------------------------------------------------------------------

def test_the_image_copies_what_exists_and_sets_only_real_settings():
    text = (DEPLOY / "container" / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources and all((PROJECT_DIR / s).exists() for s in sources), sources
    assert not unknown_variables(set(re.findall(r"(ORDERHUB_\w+)=", text)))
    for name in ("schemas_dir", "topics_file", "ownership_file", "workflow_file"):
        assert f"ORDERHUB_{name.upper()}=/app/" in text  # an installed (not editable) hub finds them
    assert '"orderhub"' in re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1)


def test_a_wheel_built_from_a_clean_copy_holds_the_files_the_hub_reads_besides_code(tmp_path):
    # what the image's `pip install .` gets: no egg-info or VCS to find data files by
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_DIR / name, source)
    for name in ("hub", "connectors"):
        shutil.copytree(PROJECT_DIR / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    run(sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(out)!r})",
        cwd=source)
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {str(p.relative_to(PROJECT_DIR)) for p in (PROJECT_DIR / "hub").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data and data <= names, sorted(data - names)
    assert os.path.basename(wheel).startswith("orderhub-")
