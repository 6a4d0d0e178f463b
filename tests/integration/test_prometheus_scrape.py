"""A real Prometheus scrapes a real worker fed through the real broker.

The project's scrape job (deploy/prometheus/prometheus.yml) is pointed at the
worker's port on 127.0.0.1 with a 1 s interval; the test waits until
Prometheus reports exactly the number of purchases that went in, checks that
the alerting rules load and evaluate, that every dashboard query is valid
PromQL, and that ``promtool check metrics`` accepts the worker's exposition.

Prometheus comes from Debian's ``prometheus`` package:
``deploy/install-prometheus.sh`` installs it (CI runs it before the tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from worker_harness import Worker, free_port

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
N_PURCHASES = 150
T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not installed: run deploy/install-prometheus.sh "
                    "(it installs Debian's prometheus package, with promtool)", pytrace=False)
    return path


def purchase(i: int) -> dict:
    user = i % 40
    return {"transaction_id": f"tx-{i}", "event_time": int((T0 + i * 60) * 1000),
            "user_id": f"user-{user}", "seller_id": f"seller-{user % 7}",
            "item_id": f"item-{i % 13}", "card_hash": f"card-{user}",
            "price": 10.0 + i % 50, "n_items": 1 + i % 3,
            "user_registered_at": "2022-06-01T00:00:00Z",
            "seller_registered_at": "2021-01-01T00:00:00Z"}


def scrape_config(metrics_port: int) -> dict:
    """The project's Prometheus config, scraping 127.0.0.1 every second."""
    project = ROOT / "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load(project.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(project.parent / f) for f in config.get("rule_files", [])]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "fraudstream"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [job]
    return config


class Prometheus:
    """The real ``prometheus`` binary on a free 127.0.0.1 port, with its own storage."""

    def __init__(self, config: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [require("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def api(self, path: str, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with a JSON error
            return json.loads(exc.read())

    def query(self, expr: str) -> list:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def wait_for(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                last = condition()
                if last:
                    return last
            except OSError as exc:  # not listening yet
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n"
                             f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    """A worker that scored N purchases, and a Prometheus scraping it."""
    require("prometheus")
    require("promtool")
    workdir = tmp_path_factory.mktemp("scrape")
    worker = Worker(kafka_bootstrap, workdir / "worker", uuid.uuid4().hex[:8]).start()
    prometheus = None
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
        for i in range(N_PURCHASES):
            p = purchase(i)
            producer.produce(worker.settings.topic_purchases, key=p["card_hash"].encode(),
                             value=orjson.dumps(p))
            producer.poll(0)
        assert producer.flush(30) == 0
        worker.wait_scored(N_PURCHASES, timeout=120)

        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(worker.settings.metrics_port)))
        check = subprocess.run([require("promtool"), "check", "config", str(config)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        prometheus = Prometheus(config, workdir)
        yield worker, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        worker.stop()


def test_prometheus_sees_every_scored_purchase(stack):
    worker, prometheus = stack
    expr = 'sum(fraudstream_events_total{job="fraudstream", kind="purchase", outcome="scored"})'

    def counted():
        result = prometheus.query(expr)
        return result and float(result[0]["value"][1]) == N_PURCHASES

    prometheus.wait_for(counted, 60, f"{expr} == {N_PURCHASES}")
    (up,) = prometheus.query('up{job="fraudstream"}')
    assert up["value"][1] == "1"
    assert up["metric"]["instance"] == f"127.0.0.1:{worker.settings.metrics_port}"
    scores = prometheus.query('sum(fraudstream_score_count{model="dynamic"})')
    assert float(scores[0]["value"][1]) == N_PURCHASES


def test_alerting_rules_load_and_evaluate(stack):
    _, prometheus = stack

    def evaluated():
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20")
                                      for r in rules) else None

    rules = prometheus.wait_for(evaluated, 30, "every rule to be evaluated")
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                     for r in rules]
    firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["data"]["alerts"]
              if a["state"] == "firing"]
    assert "FraudstreamWorkerDown" not in firing


def test_every_dashboard_query_is_valid_promql(stack):
    _, prometheus = stack
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/fraudstream.json").read_text())
    variables = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        for name, value in variables.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        prometheus.query(expr)  # asserts status == success
    # The latency panels have data: one observation per scored purchase.
    (latency,) = prometheus.query('sum(fraudstream_event_latency_seconds_count{kind="purchase"})')
    assert float(latency["value"][1]) == N_PURCHASES


def test_promtool_accepts_the_worker_exposition(stack):
    worker, _ = stack
    url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read()
    check = subprocess.run([require("promtool"), "check", "metrics"], input=text,
                           capture_output=True)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    assert b"fraudstream_events_total" in text
