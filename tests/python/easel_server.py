"""Starts the `easel` binary named by EASEL_BIN on a free loopback port with a fresh data dir."""

import os
import subprocess
import tempfile

import pytest


def start_easel(config: str, env: dict[str, str] | None = None, log_path: str | None = None):
    """Returns (process, base URL, the bootstrap account's API key). With `log_path`, the
    server's log (stderr) is written there."""
    data_dir = tempfile.mkdtemp(prefix="easel-py-")
    path = os.path.join(data_dir, "easel.toml")
    with open(path, "w") as f:
        f.write(config)
    proc = subprocess.Popen(
        [os.environ["EASEL_BIN"], "--data-dir", data_dir, "--config", path, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=open(log_path, "w") if log_path else subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )
    key = base = None
    for line in proc.stdout:
        if line.startswith("API key (shown once, keep it): "):
            key = line.split(": ", 1)[1].strip()
        if line.startswith("Easel listening on "):
            base = line.split("on ", 1)[1].strip()
            break
    if not (key and base):
        proc.kill()
        pytest.fail("easel did not start")
    return proc, base, key


def stop_easel(proc):
    proc.terminate()
    proc.wait(timeout=30)
