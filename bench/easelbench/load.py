"""Load from `oha`, bounded in requests and time, read from its JSON summary."""

import json
import subprocess
from dataclasses import dataclass, field

from .servers import BenchError

# oha's name for requests cut off when a timed run ends; they are not failures of the server.
DEADLINE_ABORT = "aborted due to deadline"


@dataclass
class LoadResult:
    ok: int  # 2xx answers
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    @property
    def ok_per_sec(self):
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def failures(self):
        """Answers other than 2xx and transport errors, except requests cut off at the deadline."""
        bad = {f"HTTP {code}": n for code, n in self.statuses.items() if not code.startswith("2")}
        bad.update({e: n for e, n in self.errors.items() if e != DEADLINE_ABORT})
        return bad


def parse(report):
    summary = report["summary"]
    percentiles = report.get("latencyPercentiles") or {}
    statuses = {str(k): int(v) for k, v in (report.get("statusCodeDistribution") or {}).items()}
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))

    def ms(key):
        value = percentiles.get(key)
        return float(value) * 1000 if value is not None else float("nan")

    return LoadResult(
        ok=ok,
        seconds=float(summary["total"]),
        p50_ms=ms("p50"),
        p99_ms=ms("p99"),
        statuses=statuses,
        errors={str(k): int(v) for k, v in (report.get("errorDistribution") or {}).items()},
    )


class Oha:
    def __init__(self, binary):
        self.binary = binary

    def version(self):
        return subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    def run(
        self,
        url,
        *,
        concurrency,
        seconds=None,
        requests=None,
        rate=None,
        method="GET",
        headers=(),
        body=None,
        request_timeout=30,
        allow_failures=False,
        rand_regex_url=False,
    ):
        """One load run: for `seconds`, or until `requests` were sent; at `rate` per second if given
        (open loop, latency measured from the scheduled send time), else as fast as it goes;
        with `rand_regex_url`, to URLs drawn from `url` as a regular expression."""
        if (seconds is None) == (requests is None):
            raise ValueError("give either seconds or requests")
        argv = [self.binary, "--no-tui", "--output-format", "json", "-c", str(concurrency), "-m", method]
        argv += ["-t", f"{request_timeout}s"]
        argv += ["-z", f"{seconds}s"] if seconds is not None else ["-n", str(requests)]
        if rate is not None:
            argv += ["-q", str(rate), "--latency-correction"]
        for name, value in headers:
            argv += ["-H", f"{name}: {value}"]
        if body is not None:
            argv += ["-d", body, "-T", "application/json"]
        if rand_regex_url:
            # Each request's URL is drawn from `url` read as a regular expression.
            argv.append("--rand-regex-url")
        argv.append(url)
        # A hard bound on the whole run, whatever oha does.
        limit = (seconds or 0) + request_timeout + 120
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise BenchError(f"oha did not stop within {limit} s: {' '.join(argv)}") from None
        if done.returncode != 0:
            raise BenchError(f"oha failed ({done.returncode}): {done.stderr.strip()[:2000]}")
        try:
            result = parse(json.loads(done.stdout))
        except (ValueError, KeyError) as e:
            raise BenchError(f"unreadable oha output ({e}): {done.stdout[:500]}") from None
        if not allow_failures and result.failures():
            raise BenchError(f"{method} {url}: failed requests {result.failures()}")
        if result.ok == 0:
            raise BenchError(f"{method} {url}: no successful answer")
        return result
