"""scripts/ensure-prometheus.sh: a no-op when promtool is present, never a daemon left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.ops.promserver import prometheus_path, require_promtool

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure-prometheus.sh"


def _prometheus_daemons() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the Debian service runs /usr/bin/prometheus with no --web.listen-address=127.0.0.1
        if (
            cmdline
            and cmdline[0].endswith(b"/prometheus")
            and not any(arg.startswith(b"--web.listen-address=127.0.0.1") for arg in cmdline)
        ):
            pids.add(int(proc.name))
    return pids


def test_script_is_valid_bash_and_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_script_is_a_quiet_noop_when_promtool_is_installed() -> None:
    require_promtool()
    assert prometheus_path() is not None
    before = _prometheus_daemons()
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert _prometheus_daemons() - before == set()


def test_script_fails_with_one_line_when_it_cannot_install(tmp_path: Path) -> None:
    # A PATH with bash and coreutils but neither promtool nor apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "cat", "tee", "chmod", "rm", "head"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ensure-prometheus: promtool is missing")
