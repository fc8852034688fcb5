"""A model added only in easel.toml works everywhere a built-in one does: generateTask and
statusTask, the unified API, /v1 with the official `openai` package (by id and by alias), the
catalog routes and /openapi.json; and it keeps its own limits and prices."""

import base64
import json
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from easel_server import start_easel, stop_easel

CONFIG = """
[local]
latency_ms = 0

[models."house-gpt"]
family = "gpt-image"
name = "House GPT"
description = "The operator's own GPT image model"
aliases = ["house-dalle"]
price_usd = 0.05
max_images = 2
max_prompt_chars = 100
sizes = ["1024x1024", "1536x1024"]
rpm = 500
max_concurrent = 50

[[models."house-gpt".prices]]
quality = "high"
size = "1536x1024"
usd = 0.25
"""


@pytest.fixture(scope="module")
def easel():
    proc, base, key = start_easel(CONFIG)
    yield base, key
    stop_easel(proc)


def call(easel, method, path, body=None, key=True):
    base, api_key = easel
    request = urllib.request.Request(f"{base}{path}", method=method)
    if key:
        request.add_header("Authorization", f"Bearer {api_key}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def balance(easel) -> float:
    status, body = call(easel, "GET", "/api/v1/account")
    assert status == 200, body
    return body["data"]["balance"]


def wait(easel, path):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = call(easel, "GET", path)
        assert status == 200, body
        if body["data"]["state"] in ("success", "completed", "failed"):
            return body["data"]
        time.sleep(0.05)
    pytest.fail(f"{path} did not finish")


def client(easel) -> OpenAI:
    base, key = easel
    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def test_the_openai_package_generates_with_it_by_id_and_alias(easel):
    before = balance(easel)
    result = client(easel).images.generate(model="house-gpt", prompt="a lamp", size="1536x1024", quality="high", n=2)
    assert len(result.data) == 2
    for image in result.data:
        assert base64.b64decode(image.b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    # Its own price row: two high-quality 1536x1024 images at $0.25.
    assert balance(easel) == pytest.approx(before - 0.5)
    before = balance(easel)
    client(easel).images.generate(model="house-dalle", prompt="a lamp")
    assert balance(easel) == pytest.approx(before - 0.05), "the flat price for an unmatched image"


def test_the_openai_package_finds_it(easel):
    model = client(easel).models.retrieve("house-gpt")
    assert (model.id, model.owned_by) == ("house-gpt", "openai")
    assert client(easel).models.retrieve("house-dalle").id == "house-gpt"
    assert "house-gpt" in [m.id for m in client(easel).models.list()]
    with pytest.raises(openai.NotFoundError):
        client(easel).models.retrieve("no-such-model")


def test_its_own_limits_hold(easel):
    with pytest.raises(openai.BadRequestError, match="n must be an integer from 1 to 2"):
        client(easel).images.generate(model="house-gpt", prompt="a lamp", n=3)
    with pytest.raises(openai.BadRequestError, match="prompt must be 1 to 100 characters"):
        client(easel).images.generate(model="house-gpt", prompt="x" * 101)
    with pytest.raises(openai.BadRequestError, match="size must be one of 1024x1024, 1536x1024, auto"):
        client(easel).images.generate(model="house-gpt", prompt="a lamp", size="1024x1536")


def test_generate_task_and_status_task(easel):
    body = {"input": {"mode": "house-gpt", "prompt": "a lamp", "aspect_ratio": "3:2", "num_images": 2}}
    status, created = call(easel, "POST", "/api/v1/generateTask/house-gpt", body)
    assert status == 200, created
    task = created["data"]["taskId"]
    data = wait(easel, f"/api/v1/statusTask/house-gpt?taskId={task}")
    assert data["state"] == "success", data
    assert len(json.loads(data["resultJson"])["resultUrls"]) == 2
    status, refused = call(easel, "POST", "/api/v1/generateTask/house-gpt", {"input": {**body["input"], "num_images": 4}})
    assert (status, refused["message"]) == (400, "input.num_images must be 1 or 2")


def test_the_unified_api(easel):
    body = {"model": "house-gpt", "prompt": "a lamp", "size": "1536x1024", "n": 2}
    status, created = call(easel, "POST", "/api/v1/images/generations", body)
    assert status == 200, created
    data = wait(easel, f"/api/v1/images/generations?task_id={created['data']['taskId']}")
    assert data["state"] == "completed", data
    assert len(data["resultUrls"]) == 2


def test_the_catalog_and_the_openapi_document_list_it(easel):
    status, catalog = call(easel, "GET", "/api/v1/models", key=False)
    assert status == 200, catalog
    house = next(m for m in catalog["data"] if m["id"] == "house-gpt")
    assert house["family"] == "gpt-image" and house["name"] == "House GPT" and house["aliases"] == ["house-dalle"]
    assert house["routes"] == ["/api/v1/generateTask/house-gpt", "/api/v1/images/generations", "/v1/images/generations"]
    assert house["limits"] == {"maxPromptChars": 100, "maxReferences": 16, "maxImages": 2}
    assert house["sizes"]["sizes"] == ["1024x1024", "1536x1024"]
    assert house["prices"] == {"usd": 0.05, "rows": [
        {"quality": "high", "size": "1536x1024", "tier": None, "usd": 0.25, "perReferenceUsd": 0.0}]}
    status, doc = call(easel, "GET", "/openapi.json", key=False)
    assert status == 200
    schemas = doc["components"]["schemas"]
    assert "house-gpt" in schemas["ApixoModel"]["enum"] and "house-dalle" in schemas["CatalogModel"]["enum"]
    unified = schemas["UnifiedRequest-house-gpt"]
    assert unified["properties"]["prompt"]["maxLength"] == 100
    assert schemas["ApixoInput-house-gpt"]["properties"]["mode"]["enum"] == ["house-gpt", "house-dalle"]
