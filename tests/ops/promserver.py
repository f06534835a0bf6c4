"""A real Prometheus server for tests: random free port, empty TSDB in a temp dir.

Use the ``prometheus_server`` fixture (import it into a test module or a
conftest), or the class directly when a test needs its own scrape config:

    with PrometheusServer(tmp_path, scrape_configs=[{"job_name": "w",
            "static_configs": [{"targets": ["127.0.0.1:6066"]}]}]) as prom:
        prom.query("up")

Binaries come from Debian's ``prometheus`` package (``scripts/ensure-prometheus.sh``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

READY_TIMEOUT_S = 30.0


def promtool_path() -> str | None:
    """Path of ``promtool``, or None when it is not installed."""
    return shutil.which("promtool")


def prometheus_path() -> str | None:
    """Path of the ``prometheus`` server binary, or None when it is not installed."""
    return shutil.which("prometheus")


def require_promtool() -> str:
    """``promtool``'s path; skips the test (saying why) only when it is truly absent."""
    path = promtool_path()
    if path is None:
        pytest.skip("promtool is not installed (run scripts/ensure-prometheus.sh)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusError(RuntimeError):
    """The test Prometheus did not start, or a query to it failed."""


class PrometheusServer:
    """One ``prometheus`` process bound to 127.0.0.1 on a free port.

    ``scrape_configs`` and ``rule_files`` go into the generated prometheus.yml;
    ``scrape_interval_s`` sets the global scrape and evaluation interval.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        scrape_configs: Sequence[dict[str, Any]] = (),
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
    ) -> None:
        binary = prometheus_path()
        if binary is None:
            msg = "the prometheus binary is not installed (run scripts/ensure-prometheus.sh)"
            raise PrometheusError(msg)
        self.binary = binary
        self.work_dir = Path(work_dir)
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.work_dir / "prometheus.log"
        self.config_path = self.work_dir / "prometheus.yml"
        config = {
            "global": {
                "scrape_interval": f"{round(scrape_interval_s * 1000)}ms",
                "evaluation_interval": f"{round(scrape_interval_s * 1000)}ms",
            },
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": list(scrape_configs),
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def start(self) -> PrometheusServer:
        """Start the server and wait until ``/-/ready`` answers 200."""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            log = self._log_path.open("ab")
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.work_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_ready():
                return self
            self.stop()
        msg = (
            f"prometheus exited or was not ready on 127.0.0.1 within {READY_TIMEOUT_S}s "
            f"(log: {self._log_path}): {self.log_tail()}"
        )
        raise PrometheusError(msg)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server logged (for failure messages)."""
        if not self._log_path.exists():
            return ""
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; returns the result list or raises PrometheusError."""
        params = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            msg = f"query {expr!r} failed: {body.get('errorType')}: {body.get('error')}"
            raise PrometheusError(msg)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def promtool_query(self, expr: str) -> subprocess.CompletedProcess[str]:
        """``promtool query instant`` against this server (exit status and output)."""
        return subprocess.run(
            [require_promtool(), "query", "instant", self.url, expr],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def reload(self) -> None:
        """Ask the server to re-read its config (``/-/reload``)."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_prometheus(work_dir: Path, **kwargs: Any) -> Iterator[PrometheusServer]:
    """Context manager form of :class:`PrometheusServer`; skips when prometheus is absent."""
    if prometheus_path() is None:
        pytest.skip("prometheus is not installed (run scripts/ensure-prometheus.sh)")
    with PrometheusServer(work_dir, **kwargs) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus with an empty TSDB and no scrape targets, shared by a test module."""
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server
