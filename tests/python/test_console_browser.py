"""The web console in Debian's Chromium, driven by Playwright (tests/console/e2e.mjs): sign-in,
the playground, the gallery, cancel, keys, and the operator's pages, each screenshotted and
checked with axe-core. `.ci/run` installs Chromium (apt) and the npm packages first; elsewhere
the test is skipped when either is missing."""

import os
import pathlib
import shutil
import subprocess

import pytest

from easel_server import start_easel, stop_easel

CONSOLE_DIR = pathlib.Path(__file__).resolve().parent.parent / "console"
ADMIN = "console-browser-admin-token"


def test_the_console_in_a_real_browser():
    node = shutil.which("node")
    chromium = shutil.which("chromium")
    if node is None or chromium is None or not (CONSOLE_DIR / "node_modules" / "playwright-core").is_dir():
        assert not os.environ.get("EASEL_REQUIRE_BROWSER"), "Chromium, Node.js or tests/console's packages are missing"
        pytest.skip("needs Chromium, Node.js and `npm ci` in tests/console")
    # Slow enough that a task can be cancelled while it runs.
    proc, base, key = start_easel("[local]\nlatency_ms = 3000\n", env={"EASEL_ADMIN_TOKEN": ADMIN})
    shots = os.environ.get("EASEL_SCREENSHOTS", str(CONSOLE_DIR / "screenshots"))
    try:
        run = subprocess.run(
            [node, str(CONSOLE_DIR / "e2e.mjs")],
            env={**os.environ, "EASEL_BASE": base, "EASEL_KEY": key, "EASEL_ADMIN_TOKEN": ADMIN,
                 "CHROMIUM": chromium, "SCREENSHOTS": shots},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_easel(proc)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok: "), run.stdout
    for page in ["login", "overview", "tasks", "task", "gallery", "playground", "keys", "webhooks",
                 "admin-accounts", "admin-channels", "admin-models", "admin-system"]:
        assert (pathlib.Path(shots) / f"{page}.png").stat().st_size > 10_000, f"a screenshot of {page}"
