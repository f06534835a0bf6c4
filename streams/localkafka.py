"""The local single-node KRaft broker: ``crisiswatch kafka up`` / ``crisiswatch kafka down``.

The broker runs from Apache Kafka jars that Maven fetches from Maven Central
into ``deploy/kafka/lib`` (see ``deploy/kafka/pom.xml``): no Docker, no tarball.
``up`` is idempotent: a broker already running from the same directory is
reused.  Every failure ends in one line saying what went wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
READY_LINE = "Kafka Server started"
START_TIMEOUT_S = 120.0
JVM_OPTIONS = {
    # the client tools' and tests' choice: starts fastest, smallest footprint
    "quick": ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"),
    # what Kafka's own start script (kafka-run-class.sh, KAFKA_JVM_PERFORMANCE_OPTS) runs a
    # broker with: the optimising compiler and G1 with 20 ms pause goals.  Benchmarks use
    # it: the quick options cost the broker a third more CPU on a 2-core machine and
    # stop it for up to 30 ms per collection, which the pipeline's latency inherits
    "kafka": (
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:MaxInlineLevel=15",
    ),
}
"""JVM options by name (``LocalKafka.jvm``), besides the heap."""


class LocalKafkaError(Exception):
    """The local broker could not be set up, started or stopped; the message is one line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def ensure_jars(kafka_dir: Path = KAFKA_DIR, *, quiet: bool = False) -> Path:
    """Fetch the broker jars with Maven unless present; returns the lib folder."""
    lib = Path(os.environ.get("CRISISWATCH_KAFKA_LIB", kafka_dir / "lib"))
    if lib.is_dir() and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    if shutil.which("java") is None:
        msg = (
            "Java is not installed: the local Kafka broker needs a JRE 17+ "
            "(apt-get install openjdk-17-jre-headless)"
        )
        raise LocalKafkaError(msg)
    if shutil.which("mvn") is None:
        msg = "Maven (mvn) is not installed: it fetches the Kafka jars (apt-get install maven)"
        raise LocalKafkaError(msg)
    if not quiet:
        print("fetching Apache Kafka jars from Maven Central (once) ...", file=sys.stderr)
    cmd = ["mvn", "-q", "-B", "-f", str(kafka_dir / "pom.xml"), f"-Dlib.dir={lib}", "package"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        msg = f"Maven could not fetch the Kafka jars (exit {proc.returncode}): {tail[0][:300]}"
        raise LocalKafkaError(msg)
    return lib


@dataclass
class LocalKafka:
    """One single-node broker+controller whose files live in ``directory``."""

    directory: Path
    port: int = 9092
    controller_port: int = 0
    """0: pick a free port (remembered in the directory for restarts)."""
    heap: str = "512m"
    jvm: str = "quick"
    """The broker's JVM options, a key of ``JVM_OPTIONS``: ``kafka`` for benchmarks."""
    extra_properties: dict[str, str] | None = None
    """Extra server.properties lines (e.g. listeners for TLS/SASL tests)."""
    listeners: str | None = None
    """Overrides the PLAINTEXT listener definition when set."""
    format_args: tuple[str, ...] = ()
    """Extra ``kafka-storage format`` arguments, e.g. ``("--add-scram", "SCRAM-SHA-512=[...]")``."""

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        if self.jvm not in JVM_OPTIONS:
            msg = f"unknown JVM options {self.jvm!r}: one of {', '.join(JVM_OPTIONS)}"
            raise LocalKafkaError(msg)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _pid_file(self) -> Path:
        return self.directory / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "kafka.log"

    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def running(self) -> bool:
        return self._running_pid() is not None

    def _write_config(self) -> Path:
        ports_file = self.directory / "controller.port"
        if not self.controller_port:
            try:
                self.controller_port = int(ports_file.read_text())
            except (OSError, ValueError):
                self.controller_port = free_port()
        ports_file.write_text(str(self.controller_port))
        listeners = self.listeners or f"PLAINTEXT://127.0.0.1:{self.port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.directory / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "9223372036854775807",
            "log.segment.bytes": "67108864",
            "log.cleaner.dedupe.buffer.size": "8388608",
        }
        if self.extra_properties:
            props.update(self.extra_properties)
        path = self.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, lib: Path, main: str, *args: str, heap: str, jvm: str = "quick") -> list[str]:
        java = shutil.which("java")
        if java is None:
            msg = "Java is not installed: the local Kafka broker needs a JRE 17+"
            raise LocalKafkaError(msg)
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap if heap.endswith('m') and int(heap[:-1]) <= 256 else '128m'}",
            *JVM_OPTIONS[jvm],
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

    def up(self, *, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start (or reuse) the broker; returns the bootstrap address once it accepts clients."""
        self.directory.mkdir(parents=True, exist_ok=True)
        pid = self._running_pid()
        if pid is not None:
            if port_open(self.port):
                return self.bootstrap
            self._wait_ready(pid, None, timeout_s)
            return self.bootstrap
        lib = ensure_jars()
        if not _port_free(self.port):
            msg = f"port {self.port} is in use by another process; choose another with --port"
            raise LocalKafkaError(msg)
        if self.controller_port and not _port_free(self.controller_port):
            msg = f"controller port {self.controller_port} is in use by another process"
            raise LocalKafkaError(msg)
        config = self._write_config()
        if not (self.directory / "data" / "meta.properties").exists():
            fmt = self._java(
                lib,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _base64_uuid(),
                "-c",
                str(config),
                "--ignore-formatted",
                *self.format_args,
                heap="256m",
            )
            done = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                reason = _reason((done.stderr + done.stdout).splitlines())
                msg = f"formatting the KRaft storage failed: {reason}"
                raise LocalKafkaError(msg)
        log = self.log_file.open("ab")
        proc = subprocess.Popen(
            self._java(lib, "kafka.Kafka", str(config), heap=self.heap, jvm=self.jvm),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._pid_file.write_text(str(proc.pid))
        self._wait_ready(proc.pid, proc, timeout_s)
        return self.bootstrap

    def _wait_ready(self, pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        start_size = 0
        while time.monotonic() < deadline:
            exited = proc.poll() is not None if proc is not None else not _pid_alive(pid)
            if exited:
                self._pid_file.unlink(missing_ok=True)
                msg = f"the Kafka broker exited during start-up: {self._log_reason()}"
                raise LocalKafkaError(msg)
            if port_open(self.port) and self._log_has(READY_LINE, start_size):
                return
            time.sleep(0.2)
        self.down()
        msg = f"the Kafka broker did not start within {timeout_s:.0f}s: {self._log_reason()}"
        raise LocalKafkaError(msg)

    def _log_has(self, text: str, offset: int) -> bool:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return text.encode() in f.read()
        except OSError:
            return False

    def _log_reason(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "no log written"
        return f"{_reason(lines)} (see {self.log_file})"

    def down(self, *, timeout_s: float = 30.0) -> bool:
        """Stop the broker; True if one was running."""
        pid = self._running_pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
        self._pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault injection)."""
        pid = self._running_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
            self._pid_file.unlink(missing_ok=True)


def _reason(lines: list[str]) -> str:
    """The most telling line of a JVM's output: the first error or exception, not a stack frame."""
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("at ")]
    for line in lines:
        if " ERROR " in line or "Exception" in line or line.startswith("Error"):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def _base64_uuid() -> str:
    import base64

    while True:  # like Kafka's Uuid.randomUuid: never start with '-', it reads as an option
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


# ------------------------------------------------------------------ the CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".run/kafka", help="broker files (default .run/kafka)")
    parser.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    parser.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default: a free one)"
    )
    parser.add_argument(
        "--jvm",
        choices=sorted(JVM_OPTIONS),
        default="quick",
        help="broker JVM options: quick (fast start, least memory; default) or kafka "
        "(Kafka's own start-script options: for load and benchmarks)",
    )


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".run/kafka", help="broker files (default .run/kafka)")


def run_up(args: argparse.Namespace) -> int:
    kafka = LocalKafka(
        Path(args.dir), port=args.port, controller_port=args.controller_port, jvm=args.jvm
    )
    try:
        bootstrap = kafka.up()
    except LocalKafkaError as exc:
        print(f"crisiswatch kafka up: {exc}", file=sys.stderr)
        return 1
    print(bootstrap)
    return 0


def run_down(args: argparse.Namespace) -> int:
    kafka = LocalKafka(Path(args.dir))
    stopped = kafka.down()
    print("stopped" if stopped else "not running", file=sys.stderr)
    return 0
