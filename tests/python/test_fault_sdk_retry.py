"""Fault case: the official `openai` package, with its default retries (2), must not make or
bill a second task for one call, whether Easel's wait runs out first (a 504, which the SDK
retries) or the SDK's own timeout does (it retries that too). The SDK sends no Idempotency-Key;
its retries carry `x-stainless-retry-count`. Prints its figures (run pytest with -s)."""

import json
import tempfile
import time
import urllib.request

import openai
import pytest
from openai import OpenAI

from easel_server import start_easel, stop_easel

WAIT_SECS = 1
# The local renderer's time for a 2048x2048 image; a 1024x1024 one takes a quarter (1.5 s).
LATENCY_MS = 6000


@pytest.fixture(scope="module")
def easel():
    log = tempfile.NamedTemporaryFile(prefix="easel-log-", suffix=".jsonl", delete=False).name
    config = f"[server]\nopenai_wait_secs = {WAIT_SECS}\n[local]\nlatency_ms = {LATENCY_MS}\n"
    # JSON logs with tower-http's request events: the server's own count of the attempts.
    env = {"EASEL_LOG_FORMAT": "json", "RUST_LOG": "info,tower_http=debug"}
    proc, base, key = start_easel(config, env=env, log_path=log)
    yield base, key, log
    stop_easel(proc)


def get(easel, path: str) -> dict:
    base, key, _ = easel
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def ledger(easel) -> list[dict]:
    return get(easel, "/api/v1/account/ledger?limit=200")["data"]["entries"]


def held_tasks(easel) -> set[str]:
    return {e["taskId"] for e in ledger(easel) if e["kind"] == "hold"}


def wait_ended(easel, model: str, task: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = get(easel, f"/api/v1/statusTask/{model}?taskId={task}")["data"]["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(0.1)
    pytest.fail(f"task {task} did not end")


def server_attempts(easel) -> int:
    """Requests to /v1/images the server has seen, from its log."""
    seen = 0
    with open(easel[2]) as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("fields", {}).get("message") == "started processing request" and any(
                span.get("uri", "").startswith("/v1/images") for span in event.get("spans", [])
            ):
                seen += 1
    return seen


def one_call(easel, name: str, *, timeout: float = 600, calls: int = 1, **params) -> dict:
    """Makes `calls` calls with the SDK's default retries; returns and prints the figures."""
    base, key, _ = easel
    sent = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    client = OpenAI(base_url=f"{base}/v1", api_key=key, http_client=http, timeout=timeout)
    assert client.max_retries == 2, "the SDK's default"
    tasks_before, seen_before, balance_before = held_tasks(easel), server_attempts(easel), balance(easel)
    outcomes = []
    for _ in range(calls):
        try:
            result = client.images.generate(**params)
            outcomes.append(f"ok ({len(result.data)} image)")
        except openai.APITimeoutError:
            outcomes.append("client timeout")
        except openai.APIStatusError as e:
            outcomes.append(f"HTTP {e.status_code}")
    tasks = held_tasks(easel) - tasks_before
    states = [wait_ended(easel, params["model"], task) for task in tasks]
    entries = [e for e in ledger(easel) if e["taskId"] in tasks]
    billed = {e["taskId"] for e in entries if e["kind"] == "settle" and e["amount"] > 0}
    figures = {
        "calls": calls,
        "attempts_sent": len(sent),
        "attempts_seen_by_server": server_attempts(easel) - seen_before,
        "tasks_created": len(tasks),
        "tasks_billed": len(billed),
        "charged_usd": round(balance_before - balance(easel), 6),
        "settled_usd": round(sum(e["amount"] for e in entries if e["kind"] == "settle"), 6),
        "task_states": states,
        "outcomes": outcomes,
    }
    print(f"\n[sdk retry: {name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


def balance(easel) -> float:
    return get(easel, "/api/v1/account")["data"]["balance"]


def assert_one_task_billed_once(figures: dict):
    assert figures["tasks_created"] == figures["calls"], figures
    assert figures["tasks_billed"] == figures["calls"], figures
    assert figures["charged_usd"] == figures["settled_usd"] > 0, figures


def test_server_wait_timeout_retries_join_the_task_and_answer_it(easel):
    # 1.5 s of rendering against a 1 s wait: the first attempt is a 504, the retry joins.
    figures = one_call(easel, "server wait runs out, retry succeeds", model="gpt-image-1", prompt="a koi")
    assert figures["attempts_seen_by_server"] >= 2, figures
    assert figures["outcomes"] == ["ok (1 image)"], figures
    assert_one_task_billed_once(figures)


def test_server_wait_timeout_on_every_attempt_still_makes_one_task(easel):
    # 6 s of rendering outlasts three 1 s waits and the back-off between them: the SDK gives up.
    figures = one_call(easel, "server wait runs out on every attempt", model="seedream-5-0",
                       prompt="a slow koi", size="2048x2048")
    assert figures["attempts_seen_by_server"] == 3, figures
    assert figures["outcomes"] == ["HTTP 504"], figures
    assert_one_task_billed_once(figures)


def test_client_timeout_retries_join_the_task(easel):
    # The SDK gives up each attempt after 0.5 s; its third attempt comes after the image is done.
    figures = one_call(easel, "client timeout, retry succeeds", timeout=0.5, model="gpt-image-1",
                       prompt="an impatient koi")
    assert figures["attempts_sent"] >= 2, figures
    assert_one_task_billed_once(figures)


def test_client_timeout_on_every_attempt_still_makes_one_task(easel):
    figures = one_call(easel, "client timeout on every attempt", timeout=0.5, model="seedream-5-0",
                       prompt="a very slow koi", size="2048x2048")
    assert figures["attempts_sent"] == 3, figures
    assert figures["outcomes"] == ["client timeout"], figures
    assert_one_task_billed_once(figures)


def test_a_second_call_with_the_same_prompt_is_a_second_task(easel):
    figures = one_call(easel, "two calls, one prompt", calls=2, model="gpt-image-1", prompt="a twin koi")
    assert figures["outcomes"] == ["ok (1 image)"] * 2, figures
    assert_one_task_billed_once(figures)
