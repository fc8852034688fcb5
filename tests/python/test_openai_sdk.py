"""The official `openai` Python package, pointed at Easel with base_url, works unchanged."""

import base64
import struct
import zlib

import openai
import pytest
from openai import OpenAI

from easel_server import start_easel, stop_easel


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
    proc, base, key = start_easel("[local]\nlatency_ms = 0\n")
    yield base, key
    stop_easel(proc)


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


@pytest.fixture(scope="module")
def slow_easel():
    # Rendering takes long enough (about half a second for 1024x1024) for previews on the way.
    proc, base, key = start_easel("[local]\nlatency_ms = 2000\n")
    yield base, key
    stop_easel(proc)


def test_generate_streams_partial_images_then_the_image(slow_easel):
    stream = client(slow_easel).images.generate(
        model="gpt-image-1", prompt="a lighthouse in fog", stream=True, partial_images=2
    )
    events = list(stream)
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    frames = [base64.b64decode(e.b64_json) for e in events]
    assert all(png_size(f) == (1024, 1024) for f in frames)
    assert len(set(frames)) == 3, "each preview differs, and from the image"
    done = events[-1]
    assert (done.size, done.output_format, done.background) == ("1024x1024", "png", "opaque")
    assert done.usage.total_tokens == 0


def test_a_stream_without_previews_is_the_completed_event_alone(slow_easel):
    events = list(client(slow_easel).images.generate(model="gpt-image-1", prompt="a kite", stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]


def test_edit_streams_its_own_event_types(slow_easel, tmp_path):
    path = tmp_path / "ref.png"
    path.write_bytes(tiny_png())
    with open(path, "rb") as f:
        stream = client(slow_easel).images.edit(
            model="gpt-image-1", image=f, prompt="add a sunset", stream=True, partial_images=1
        )
        events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert png_size(base64.b64decode(events[-1].b64_json)) == (1024, 1024)
