"""The official `openai` Python package, pointed at Easel with base_url, works unchanged.

Starts the `easel` binary named by EASEL_BIN on a free loopback port with a fresh data dir."""

import base64
import os
import struct
import subprocess
import tempfile
import zlib

import openai
import pytest
from openai import OpenAI


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def tiny_png(width: int = 32, height: int = 32) -> bytes:
    """A solid PNG, built by hand so the test needs no imaging library."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x20\xa0\x40" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def easel():
    data_dir = tempfile.mkdtemp(prefix="easel-sdk-")
    config = os.path.join(data_dir, "easel.toml")
    with open(config, "w") as f:
        f.write("[local]\nlatency_ms = 0\n")
    proc = subprocess.Popen(
        [os.environ["EASEL_BIN"], "--data-dir", data_dir, "--config", config, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    key = base = None
    for line in proc.stdout:
        if line.startswith("API key (shown once, keep it): "):
            key = line.split(": ", 1)[1].strip()
        if line.startswith("Easel listening on "):
            base = line.split("on ", 1)[1].strip()
            break
    assert key and base, "easel did not start"
    yield base, key
    proc.terminate()
    proc.wait(timeout=30)


def client(easel, key=None) -> OpenAI:
    base, real_key = easel
    return OpenAI(base_url=f"{base}/v1", api_key=key or real_key, max_retries=0)


def test_generate_returns_two_1024_images(easel):
    result = client(easel).images.generate(model="gpt-image-1", prompt="a lighthouse in fog", n=2)
    assert len(result.data) == 2
    for image in result.data:
        assert png_size(base64.b64decode(image.b64_json)) == (1024, 1024)


def test_edit_with_a_png_file(easel, tmp_path):
    path = tmp_path / "ref.png"
    path.write_bytes(tiny_png())
    with open(path, "rb") as f:
        result = client(easel).images.edit(model="gpt-image-1", image=f, prompt="add a sunset")
    assert len(result.data) == 1
    assert png_size(base64.b64decode(result.data[0].b64_json)) == (1024, 1024)


def test_bad_key_raises_authentication_error(easel):
    with pytest.raises(openai.AuthenticationError):
        client(easel, key="sk-not-a-real-key").images.generate(model="gpt-image-1", prompt="x")


def test_models_are_listed(easel):
    ids = {m.id for m in client(easel).models.list()}
    assert {"gpt-image-1", "seedream-5-0"} <= ids
