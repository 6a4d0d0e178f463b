"""The docker-compose stack and its monitoring files, checked without Docker.

No Docker engine runs here, so these tests read what ``docker compose up``
would read and check that the pieces fit: services and their start order,
mounted files, the Prometheus scrape targets, the Grafana provisioning, and
that every metric a dashboard or a rule queries is one a worker exports.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = {"kafka": "apache/kafka", "aerospike": "aerospike/aerospike-server",
            "prometheus": "prom/prometheus", "grafana": "grafana/grafana"}
METRIC = re.compile(r"\bfraudstream_[a-zA-Z0-9_]+")


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose():
    return load(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((ROOT / source).resolve(), target))
    return mounts


def host_path(service: dict, container_path: str) -> Path:
    """The repository file a container sees at ``container_path``."""
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not in any bind mount")


def exported_metric_names() -> set[str]:
    """Every sample name a worker can export, from its metric declarations."""
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                    "histogram": ("_bucket", "_count", "_sum", "_created"),
                    "summary": ("", "_count", "_sum", "_created")}.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def test_every_service_is_there_with_an_official_image(services):
    assert set(services) >= {"kafka", "aerospike", "prometheus", "grafana", "worker",
                             "simulator"}
    for name, repository in OFFICIAL.items():
        image, _, tag = services[name]["image"].partition(":")
        assert image == repository, name
        assert tag and tag != "latest", f"{name}: pin a version"
    for name in ("worker", "simulator"):
        assert services[name]["build"] == "."


def test_start_order_waits_for_healthy_services(services):
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec.get("condition") == "service_healthy":
                assert "test" in services[target].get("healthcheck", {}), (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck")
    assert set(services["worker"]["depends_on"]) == {"kafka", "aerospike"}
    assert "worker" in services["simulator"]["depends_on"]


def test_mounted_files_exist_and_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which is not in the repository"
            assert ROOT in source.parents, f"{name} mounts {source} from outside the repository"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_kafka_is_a_single_kraft_node_reachable_by_the_worker(services):
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    bootstrap = env_of(services["worker"])["FRAUDSTREAM_KAFKA_BOOTSTRAP"]
    assert any(listener.endswith("//" + bootstrap) for listener in advertised)
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(env["KAFKA_NODE_ID"] + "@kafka:")


def test_aerospike_serves_the_namespace_of_the_store_url(services):
    service = services["aerospike"]
    config = host_path(service, service["command"][service["command"].index("--config-file") + 1])
    namespaces = re.findall(r"^\s*namespace\s+(\S+)\s*\{", config.read_text(), re.MULTILINE)
    store_url = env_of(services["worker"])["FRAUDSTREAM_STORE_URL"]
    assert store_url.startswith("aerospike://aerospike:3000/")
    assert store_url.rsplit("/", 1)[1] in namespaces


def test_worker_and_simulator_use_only_real_settings(services):
    fields = {f"FRAUDSTREAM_{name.upper()}": name for name in Settings.model_fields}
    for name in ("worker", "simulator"):
        env = env_of(services[name])
        unknown = set(env) - set(fields)
        assert not unknown, f"{name} sets {sorted(unknown)}, which Settings does not read"
        Settings(**{fields[k]: v for k, v in env.items()})  # and the values validate
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    port = env_of(worker)["FRAUDSTREAM_METRICS_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    assert services["simulator"]["command"][:2] == ["simulate", "--kafka"]


def prometheus_config(services) -> Path:
    service = services["prometheus"]
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    return host_path(service, flag.split("=", 1)[1])


def test_prometheus_scrapes_the_worker_metrics_port(services):
    path = prometheus_config(services)
    config = load(path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["fraudstream"]["static_configs"] for t in sc["targets"]]
    port = env_of(services["worker"])["FRAUDSTREAM_METRICS_PORT"]
    assert targets
    for target in targets:
        host, _, target_port = target.partition(":")
        assert host in services and target_port == port, target
    for rule_file in config.get("rule_files", []):
        assert (path.parent / rule_file).exists(), rule_file


def test_the_local_prometheus_config_scrapes_this_machine():
    config = load(ROOT / "deploy/prometheus/prometheus.local.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "fraudstream"
    assert all(t.startswith("127.0.0.1:") for sc in job["static_configs"] for t in sc["targets"])


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(services):
    grafana = services["grafana"]
    env = env_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    (datasources,) = (provisioning / "datasources").glob("*.y*ml")
    (source,) = load(datasources)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    (providers,) = (provisioning / "dashboards").glob("*.y*ml")
    for provider in load(providers)["providers"]:
        folder = host_path(grafana, provider["options"]["path"])
        assert (folder / "fraudstream.json").exists()
    assert host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).exists()


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard.get("templating", {}).get("list", [])]
    return queries


@pytest.fixture(scope="module")
def dashboard():
    return json.loads((ROOT / "deploy/grafana/dashboards/fraudstream.json").read_text())


def test_dashboard_panels_query_the_provisioned_datasource(dashboard):
    datasource = load(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "latency", "score", "alerts", "roc auc", "average precision",
                  "card precision", "drift", "version", "lag", "store"):
        assert topic in titles, f"no panel about {topic}"


def test_dashboard_and_rules_query_only_exported_metrics(dashboard):
    used = {m for q in dashboard_queries(dashboard) for m in METRIC.findall(q)}
    rules = load(ROOT / "deploy/prometheus/fraudstream.rules.yml")
    used |= {m for g in rules["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
    missing = sorted(used - exported_metric_names())
    assert not missing, f"not declared in stream/metrics.py: {missing}"


def test_the_image_runs_the_fraudstream_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["fraudstream"\]\s*$', dockerfile, re.MULTILINE)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "fraudstream" in scripts
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
