"""What the benchmark needs, installed idempotently: Easel's release binaries, the load
generator (oha, from crates.io) and LiteLLM's proxy (from PyPI, in a venv)."""

import json
import os
import subprocess

from .servers import BenchError

OHA_VERSION = "1.16.0"
# 1.106.12: the newest release whose `proxy` extra resolves from PyPI alone (later ones need
# packages that are not published there). Pinned so that every run compares the same proxy.
LITELLM_VERSION = "1.106.12"

CACHE = os.environ.get("EASEL_BENCH_CACHE", "/var/cache/easel")


def _run(argv, what, env=None, timeout=3600):
    try:
        done = subprocess.run(argv, env={**os.environ, **(env or {})}, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} took more than {timeout} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def build(repo, release):
    """Builds `easel` and the benchmark's helper programs; returns their paths."""
    meta = json.loads(_run(["cargo", "metadata", "--format-version", "1", "--no-deps"], "cargo metadata"))
    argv = ["cargo", "build", "--locked", "--bin", "easel", "--example", "bench_bare", "--example", "bench_fake_upstream"]
    if release:
        argv.append("--release")
    print(f"== building ({'release' if release else 'debug'}): {' '.join(argv)}", flush=True)
    _run(argv, "cargo build", timeout=3600)
    out = os.path.join(meta["target_directory"], "release" if release else "debug")
    return {
        "easel": os.path.join(out, "easel"),
        "bare": os.path.join(out, "examples", "bench_bare"),
        "fake": os.path.join(out, "examples", "bench_fake_upstream"),
    }


def oha():
    """The pinned oha, installed with cargo into the cache on first use."""
    root = os.path.join(CACHE, "cargo-bin")
    binary = os.path.join(root, "bin", "oha")
    if os.path.exists(binary):
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        if OHA_VERSION in version:
            return binary
    print(f"== installing oha {OHA_VERSION} into {root} (once; a few minutes)", flush=True)
    argv = ["cargo", "install", "oha", "--version", OHA_VERSION, "--locked"]
    argv += ["--root", root, "--target-dir", os.path.join(CACHE, "oha-build")]
    _run(argv, "cargo install oha")
    return binary


def litellm(install):
    """The `litellm` proxy command from the bench venv; installs it when `install` is true.
    Returns (path or None, why it is missing)."""
    venv = os.path.join(CACHE, "bench-venv")
    python = os.path.join(venv, "bin", "python")
    binary = os.path.join(venv, "bin", "litellm")

    def installed():
        if not os.path.exists(binary):
            return False
        done = subprocess.run(
            [python, "-m", "pip", "show", "litellm"], capture_output=True, text=True, env={**os.environ}
        )
        return f"Version: {LITELLM_VERSION}" in done.stdout

    if installed():
        return binary, None
    if not install:
        return None, f"LiteLLM {LITELLM_VERSION} is not installed in {venv} (a full run installs it)"
    print(f"== installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once; a few minutes)", flush=True)
    try:
        if not os.path.exists(python):
            _run(["python3", "-m", "venv", venv], "creating the LiteLLM venv")
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run(pip + [f"litellm[proxy]=={LITELLM_VERSION}"], "pip install litellm[proxy]")
    except BenchError as e:
        return None, f"LiteLLM could not be installed: {str(e).splitlines()[0]}"
    if not installed():
        return None, f"LiteLLM {LITELLM_VERSION} is still missing from {venv} after pip install"
    return binary, None
