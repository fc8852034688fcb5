"""Processes the benchmark starts on loopback: readiness by polling, CPU and memory from /proc,
and a clean stop of exactly the processes it started."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


class BenchError(Exception):
    """The benchmark itself broke (a server did not start, a load run failed)."""


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url, headers=None, timeout=2.0):
    """The status of a GET, or None when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_until(what, check, timeout, interval=0.1):
    """Polls `check` until it returns a true value, which it returns; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Server:
    """One process of the benchmark, its output in a log file."""

    def __init__(self, name, argv, log_dir, env=None, cwd=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, lines=20):
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")

    def wait_ready(self, url, timeout, headers=None, ok=(200,)):
        """Waits until `url` answers with one of `ok`, failing early if the process exits."""

        def ready():
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return http_status(url, headers) in ok

        try:
            wait_until(f"{self.name} to answer {url}", ready, timeout, interval=0.2)
        except BenchError as e:
            raise BenchError(f"{e}\n--- {self.log_path}:\n{self.log_tail()}") from None

    def cpu_seconds(self):
        """User plus system CPU time the process has used."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        return (int(fields[11]) + int(fields[12])) / ticks

    def memory_kb(self, field="VmRSS"):
        """A line of /proc/PID/status in kB (VmRSS: resident now; VmHWM: its peak)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise BenchError(f"no {field} in /proc/{self.pid}/status")

    def reset_peak(self):
        """Starts VmHWM again from the resident size now (Linux's clear_refs "5"), so that it
        reads the peak of what follows."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError as e:
            raise BenchError(f"cannot reset the peak RSS of {self.name}: {e}") from None

    def stop(self):
        """SIGTERM to the process group this server started, SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log.close()


class Fleet:
    """The servers of one run, all stopped when the run ends, however it ends."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.servers = []

    def start(self, name, argv, env=None, cwd=None):
        server = Server(name, argv, self.log_dir, env=env, cwd=cwd)
        self.servers.append(server)
        return server

    def stop(self, server):
        server.stop()
        self.servers.remove(server)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
