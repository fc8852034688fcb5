"""The official `openai` npm package, pointed at Easel with baseURL, streams partial images.

Runs tests/node/stream.mjs with Node.js; `.ci/run` installs its dependencies (npm) first. Skipped
when Node.js or the package is missing."""

import os
import pathlib
import shutil
import subprocess

import pytest

from easel_server import start_easel, stop_easel

NODE_DIR = pathlib.Path(__file__).resolve().parent.parent / "node"


def test_the_node_package_streams_partial_images():
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        # CI installs both, and says so: there a missing package fails rather than skips.
        assert not os.environ.get("EASEL_REQUIRE_NODE"), "Node.js or tests/node's packages are missing"
        pytest.skip("needs Node.js and `npm install` in tests/node")
    proc, base, key = start_easel("[local]\nlatency_ms = 2000\n")
    try:
        run = subprocess.run(
            [node, str(NODE_DIR / "stream.mjs")],
            env={**os.environ, "EASEL_BASE": base, "EASEL_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_easel(proc)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok: 3 events"), run.stdout
