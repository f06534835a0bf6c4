"""Run the real ``crisiswatch worker`` as a child process against the test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streams.localkafka import free_port


@dataclass
class WorkerProcess:
    bootstrap: str
    prefix: str
    data_dir: Path
    rules_dir: Path
    partitions: int = 4
    web_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
        env.update(
            {
                "CRISISWATCH_KAFKA_BOOTSTRAP": self.bootstrap,
                "CRISISWATCH_TOPIC_PREFIX": self.prefix,
                "CRISISWATCH_PARTITIONS": str(self.partitions),
                "CRISISWATCH_RULES_DIR": str(self.rules_dir),
                "CRISISWATCH_DATA_DIR": str(self.data_dir),
                "CRISISWATCH_WEB_PORT": str(self.web_port),
                "CRISISWATCH_WEB_HOST": "127.0.0.1",
                "CRISISWATCH_RULES_RELOAD_S": "1",
                "CRISISWATCH_IDLE_PARTITION_S": "1.5",
                **self.extra_env,
            }
        )
        return env

    def start(self, *, ready_timeout_s: float = 90.0) -> WorkerProcess:
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log.{self.starts}"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_ready(ready_timeout_s)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                status, _ = self.get("/readyz", timeout_s=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout_s}s:\n{self.tail()}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of a metric's samples (optionally filtered by labels) from /metrics.

        ``name`` is a sample's name (a counter's ends in ``_total``); only its series
        are rendered (``/metrics?name[]=``), not the whole page with its per-brand gauges."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = self.get(f"/metrics?name[]={name}")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name != name:
                    continue
                if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                total += sample.value
        return total

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
