"""`/openapi.json` is valid OpenAPI 3.1, and the server answers as it says: schemathesis generates
requests from the document (its examples, then valid and invalid data) and checks every answer
against it. Bounded (few examples per operation, a fixed seed) to keep CI short."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from easel_server import start_easel, stop_easel

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN_TOKEN = "schemathesis-admin-token"
# Enough credits and limits that generated requests reach the task machinery rather than 402/429.
CONFIG = """
[server]
bootstrap_credits_usd = 1000
openai_wait_secs = 30

[local]
latency_ms = 0
"""


@pytest.fixture(scope="module")
def easel():
    proc, base, key = start_easel(CONFIG, env={"EASEL_ADMIN_TOKEN": ADMIN_TOKEN})
    yield base, key
    stop_easel(proc)


def test_the_document_is_valid_openapi_3_1(easel):
    base, _ = easel
    with urllib.request.urlopen(f"{base}/openapi.json") as res:
        spec = json.load(res)
    assert spec["openapi"].startswith("3.1."), spec["openapi"]
    OpenAPIV31SpecValidator(spec).validate()


def test_schemathesis_finds_no_failures(easel, tmp_path):
    base, key = easel
    command = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "--config-file", os.path.join(HERE, "schemathesis.toml"),
        "run", f"{base}/openapi.json",
        "--max-examples", os.environ.get("EASEL_SCHEMATHESIS_EXAMPLES", "8"),
        "--seed", os.environ.get("EASEL_SCHEMATHESIS_SEED", "20261127"),
        "--request-timeout", "60",
        "--no-color",
        "--report-dir", str(tmp_path),
    ]
    env = {
        **os.environ,
        "EASEL_TEST_KEY": key,
        "EASEL_TEST_ADMIN_TOKEN": ADMIN_TOKEN,
        "SCHEMATHESIS_HOOKS": os.path.join(HERE, "schemathesis_hooks.py"),
    }
    # In a temporary directory: Hypothesis keeps its caches in the working directory.
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
