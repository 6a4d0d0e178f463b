"""Local single-node Apache Kafka (KRaft) broker for development, tests and CI.

There is no Docker engine and no download site other than package registries,
so the broker jars come from Maven Central (pom.xml beside this file) and run on
the machine's JDK (17+). Starting and stopping a broker needs only the standard
library; confluent_kafka is imported by create_topics() alone.

    python -m deploy.kafka.launcher fetch
    python -m deploy.kafka.launcher start [--workdir D] [--port P] [--pidfile F]
    python -m deploy.kafka.launcher stop [--pidfile F]
    python -m deploy.kafka.launcher run [--workdir D] [--port P]
"""
from __future__ import annotations

import argparse
import atexit
import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Kafka 4.x is KRaft-only and dropped the oldest protocol versions; aiokafka 0.14
# (under faust-streaming 0.15.3) and confluent-kafka 2.16 were both checked against
# 4.1.1: topic creation, produce, consume, consumer-group join, offset commit, and a
# Faust agent end to end. No need to fall back to 3.9.
KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("pom.xml")
JVM_OPTS = ["-Xmx512m", "-Xms256m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]
TOOL_JVM_OPTS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = warn
"""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Jar cache outside the repo, kept between runs; FRAUDSTREAM_KAFKA_CACHE overrides it."""
    env = os.environ.get("FRAUDSTREAM_KAFKA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fraudstream" / f"kafka-{version}"


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Return the folder of broker jars; Maven runs only when no complete fetch is cached."""
    root = cache_dir(version)
    libs, marker = root / "libs", root / "fetched"
    if marker.exists() and marker.read_text().strip() == version:
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers fetch once
        if marker.exists() and marker.read_text().strip() == version:
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
        shutil.rmtree(libs, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}", "-DincludeScope=runtime", f"-Dkafka.version={version}"]
        out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"fetching the Kafka {version} jars failed: {' '.join(cmd)}\n{out.stdout[-3000:]}")
        marker.write_text(version + "\n")
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_cluster_id() -> str:
    """A Kafka Uuid in its text form (base64url, unpadded); a leading '-' would read as a CLI flag."""
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


def _request(host: str, port: int, api_key: int, version: int, body: bytes, timeout: float = 2.0) -> bytes:
    """One request/response on a new connection (request header v1); returns the response body."""
    req = struct.pack(">hhih", api_key, version, 1, 11) + b"fraudstream" + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">i", buf)[0]:
            if not (chunk := s.recv(65536)):
                raise ConnectionError("broker closed the connection")
            buf += chunk
    if struct.unpack_from(">i", buf, 4)[0] != 1:
        raise ConnectionError("unexpected correlation id")
    return buf[8:]


def metadata_ready(host: str, port: int) -> bool:
    """True once the broker answers a Metadata v4 request listing a broker and a controller.

    A TCP connect alone is not enough: the answer shows the broker is registered and unfenced.
    """
    try:
        buf = _request(host, port, 3, 4, struct.pack(">ib", 0, 0))  # no topics, no auto-creation
        _throttle, brokers = struct.unpack_from(">ii", buf)
        pos = 8
        for _ in range(brokers):  # node_id, host, port, rack
            pos += 4 + 2 + struct.unpack_from(">h", buf, pos + 4)[0] + 4
            pos += 2 + max(struct.unpack_from(">h", buf, pos)[0], 0)
        pos += 2 + max(struct.unpack_from(">h", buf, pos)[0], 0)  # cluster_id
        return brokers > 0 and struct.unpack_from(">i", buf, pos)[0] >= 0
    except (OSError, struct.error):
        return False


def group_coordinator_ready(host: str, port: int) -> bool:
    """True once FindCoordinator (v1) for a group succeeds.

    The first such request makes the broker create __consumer_offsets; doing it here
    spares the first consumer group a round of COORDINATOR_NOT_AVAILABLE retries.
    """
    try:
        buf = _request(host, port, 10, 1, struct.pack(">h", 11) + b"fraudstream" + b"\x00")
        return struct.unpack_from(">ih", buf)[1] == 0
    except (OSError, struct.error):
        return False


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """Stop a broker started in its own session (its pid is its process group).

    SIGTERM for a clean shutdown, SIGKILL after `timeout`. Returns False when no
    Kafka broker runs under that pid, so a reused pid is never signalled.
    """
    if not _is_kafka(pid):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            (os.killpg if os.getpgid(pid) == pid else os.kill)(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
                    return True
            except ChildProcessError:
                pass
            if not _is_kafka(pid):
                return True
            time.sleep(0.1)
    return not _is_kafka(pid)


def log_excerpt(path: Path, tail: int = 25) -> str:
    """The first ERROR lines (the cause) and the last lines of a broker log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in lines[:-tail] if "] ERROR " in line][:5]
    return "\n".join(errors + (["..."] if errors else []) + lines[-tail:])


class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1 in its own process group.

    It is stopped at interpreter exit unless detach() was called. A workdir it
    made itself (workdir=None) is removed by stop(), except after a failed start.
    """

    def __init__(self, workdir: Path | None = None, port: int | None = None):
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fraudstream-kafka-"))
        self.port = port or free_port()
        while (controller := free_port()) == self.port:
            pass
        self.controller_port = controller
        self.log_path = self.workdir / "broker.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _write_config(self) -> Path:
        # Static voters rather than a `--standalone` dynamic quorum, which records the controller
        # port in the formatted log: a reused workdir can then come back on new free ports.
        mib = 1024 * 1024
        config = self.workdir / "server.properties"
        config.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self.workdir / "data"}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes={16 * mib}
log.cleaner.dedupe.buffer.size={16 * mib}
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
""")
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        return config

    def _java(self, opts: list[str], main: str, *args: str) -> list[str]:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home, "bin", "java")) if home else shutil.which("java") or "java"
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        return [java, *opts, log4j, "-cp", str(fetch_jars() / "*"), main, *args]

    def start(self, timeout: float = 90) -> str:
        """Format storage if new, launch the broker, wait until it serves Metadata; return the bootstrap."""
        if self.proc and self.proc.poll() is None:
            return self.bootstrap
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        quiet = dict(stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with open(self.log_path, "ab") as log:
            if not (self.workdir / "data" / "meta.properties").exists():
                fmt = self._java(TOOL_JVM_OPTS, "kafka.tools.StorageTool", "format",
                                 "-t", random_cluster_id(), "-c", str(config))
                if subprocess.run(fmt, stdout=log, timeout=120, **quiet).returncode != 0:
                    raise RuntimeError(f"Kafka storage format failed; log {self.log_path}:\n"
                                       f"{log_excerpt(self.log_path)}")
            cmd = self._java(JVM_OPTS, "kafka.Kafka", str(config))
            self.proc = subprocess.Popen(cmd, stdout=log, cwd=self.workdir, start_new_session=True, **quiet)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while not (metadata_ready("127.0.0.1", self.port) and group_coordinator_ready("127.0.0.1", self.port)):
            died, late = self.proc.poll() is not None, time.monotonic() > deadline
            if died or late:
                why = f"exited with {self.proc.returncode}" if died else f"was not ready after {timeout}s"
                msg = f"Kafka broker {why}; log {self.log_path}:\n{log_excerpt(self.log_path)}"
                self._owns_workdir = False  # keep the log
                self.stop()
                raise (RuntimeError if died else TimeoutError)(msg)
            time.sleep(0.2)
        return self.bootstrap

    def detach(self) -> None:
        """Leave the broker running after this interpreter exits; stop it later with stop_pid()."""
        atexit.unregister(self.stop)
        self._owns_workdir = False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`. Safe to call more than once."""
        atexit.unregister(self.stop)
        proc, self.proc = self.proc, None
        if proc and proc.poll() is None:
            stop_pid(proc.pid, timeout)
            try:
                proc.wait(10)  # reap it: no zombie left behind
            except subprocess.TimeoutExpired:
                pass
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def create_topics(bootstrap: str, topics: dict[str, int], config: dict[str, str] | None = None,
                  timeout: float = 30.0) -> list[str]:
    """Create topics (replication factor 1) and wait until metadata shows all their partitions.

    The broker has auto.create.topics.enable=false, and Faust creates only its own internal
    topics, so the topics its agents read must be made here (or by the app) first.
    Topics that already exist are fine. Returns the names that were newly created.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, num_partitions=n, replication_factor=1, config=dict(config or {}))
           for name, n in topics.items()]
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        if all(t in meta and meta[t].error is None and len(meta[t].partitions) == n for t, n in topics.items()):
            return created
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout}s: {sorted(topics)}")
        time.sleep(0.1)


def _cli_start(args: argparse.Namespace, state: Path) -> None:
    if state.exists():  # one broker per pidfile: reuse it while it answers
        old = json.loads(state.read_text())
        host, port = old["bootstrap"].rsplit(":", 1)
        if _is_kafka(old["pid"]) and metadata_ready(host, int(port)):
            print(old["bootstrap"])
            return
        if old.get("remove_workdir"):
            shutil.rmtree(old["workdir"], ignore_errors=True)
    broker = KafkaBroker(args.workdir, args.port)
    owned = broker._owns_workdir
    broker.start(args.timeout)
    broker.detach()
    args.pidfile.parent.mkdir(parents=True, exist_ok=True)
    args.pidfile.write_text(f"{broker.pid}\n")
    state.write_text(json.dumps({"pid": broker.pid, "bootstrap": broker.bootstrap, "workdir": str(broker.workdir),
                                 "remove_workdir": owned, "log": str(broker.log_path)}, indent=1) + "\n")
    print(broker.bootstrap, flush=True)


def _cli_stop(args: argparse.Namespace, state: Path) -> None:
    info = json.loads(state.read_text()) if state.exists() else {}
    if not info and args.pidfile.exists():
        info = {"pid": int(args.pidfile.read_text().split()[0])}
    if not info:
        print(f"no broker recorded in {args.pidfile}", file=sys.stderr)
        return
    stopped = stop_pid(info["pid"])
    print(f"broker pid {info['pid']} {'stopped' if stopped else 'was not running'}", file=sys.stderr)
    if info.get("remove_workdir"):
        shutil.rmtree(info["workdir"], ignore_errors=True)
    args.pidfile.unlink(missing_ok=True)
    state.unlink(missing_ok=True)


def _cli_run(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    broker = KafkaBroker(args.workdir, args.port)
    try:
        print(broker.start(args.timeout), flush=True)
        print(f"pid {broker.pid}, log {broker.log_path}; Ctrl-C stops it", file=sys.stderr)
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.kafka.launcher", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache and print their folder")
    pidfile = dict(type=Path, default=cache_dir() / "broker.pid", help="pid file; state goes beside it as .json")
    for name, text in (("start", "start a detached broker and print its bootstrap address"),
                       ("run", "run a broker in the foreground until Ctrl-C")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--workdir", type=Path, help="data and log folder (default: a new temp folder)")
        p.add_argument("--port", type=int, help="broker port (default: a free one)")
        p.add_argument("--timeout", type=float, default=90)
        if name == "start":
            p.add_argument("--pidfile", **pidfile)
    sub.add_parser("stop", help="stop the broker recorded in the pid file").add_argument("--pidfile", **pidfile)
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        print(fetch_jars())
    elif args.cmd == "run":
        _cli_run(args)
    else:
        (_cli_start if args.cmd == "start" else _cli_stop)(args, args.pidfile.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
