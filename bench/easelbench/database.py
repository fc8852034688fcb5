"""The database a benchmark's Easel servers use: SQLite files in their data dirs (the default) or
one fresh database per server on a PostgreSQL server, read back by the benchmark itself (task
counts, preloads) and, on PostgreSQL, measured on its own with pgbench."""

import os
import re
import secrets
import sqlite3
import subprocess
import urllib.parse

from .servers import BenchError


class Sqlite:
    name = "SQLite"

    def url(self, data_dir, server_name):
        """Easel's `EASEL_DATABASE_URL` for a server (None: its default file in the data dir)."""
        return None

    def query(self, easel, sql):
        # A second reader is fine under WAL.
        with sqlite3.connect(f"file:{easel.data_dir}/easel.db?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql).fetchall()

    def execute(self, easel, script):
        with sqlite3.connect(os.path.join(easel.data_dir, "easel.db"), timeout=60) as db:
            db.executescript(script)

    def settle(self, easel):
        """After a bulk load: fresh planner statistics, and the write-ahead log (gigabytes of
        it, which would slow every reader after) moved into the database file."""
        with sqlite3.connect(os.path.join(easel.data_dir, "easel.db"), timeout=60) as db:
            db.execute("ANALYZE")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def columns(self, easel, table):
        return [row[1] for row in self.query(easel, f"PRAGMA table_info({table})")]

    # Dialect fragments for the preloads.
    @staticmethod
    def series(n):
        """A FROM item of the integers 0 … n - 1 as `seq.i`."""
        return f"(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1}) SELECT i FROM s) AS seq"

    @staticmethod
    def padded(expr, width):
        return f"substr('{'0' * width}' || ({expr}), -{width}, {width})"

    def cleanup(self):
        pass


class Postgres:
    name = "PostgreSQL"

    def __init__(self, admin_url):
        self.admin_url = admin_url
        self.created = []

    def _db_url(self, database):
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    def psql(self, url, sql, timeout=1800):
        argv = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise BenchError("psql is not installed (--db postgres needs the PostgreSQL client)") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"psql took more than {timeout} s: {sql[:200]}") from None
        if done.returncode != 0:
            raise BenchError(f"psql failed: {done.stderr.strip()[:1000]}\n  on: {sql[:300]}")
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def create_database(self, label):
        database = f"easel_bench_{re.sub(r'[^a-z0-9]', '_', label.lower())}_{secrets.token_hex(4)}"
        self.psql(self.admin_url, f"CREATE DATABASE {database}")
        self.created.append(database)
        return self._db_url(database)

    def url(self, data_dir, server_name):
        url = self.create_database(server_name)
        with open(os.path.join(data_dir, "database-url"), "w") as f:
            f.write(url)
        return url

    @staticmethod
    def _server_url(easel):
        with open(os.path.join(easel.data_dir, "database-url")) as f:
            return f.read().strip()

    def query(self, easel, sql):
        return [tuple(_number(v) for v in row) for row in self.psql(self._server_url(easel), sql)]

    def execute(self, easel, script):
        self.psql(self._server_url(easel), script)

    def settle(self, easel):
        """After a bulk load: the new rows vacuumed (so that autovacuum does not start on them
        during the measurement) with fresh statistics, and the load's write-ahead log
        checkpointed now rather than by the volume of WAL in the middle of a run. Separate
        calls: neither runs inside a transaction."""
        url = self._server_url(easel)
        self.psql(url, "VACUUM (ANALYZE)")
        self.psql(url, "CHECKPOINT")

    def columns(self, easel, table):
        sql = f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        return [row[0] for row in self.query(easel, sql)]

    @staticmethod
    def series(n):
        return f"generate_series(0, {n - 1}) AS seq(i)"

    @staticmethod
    def padded(expr, width):
        return f"lpad(({expr})::text, {width}, '0')"

    def pgbench(self, clients, seconds):
        """Transactions per second of pgbench's simple-update script (`-N`) at `clients`, on a
        database of its own (scale 10) on the same server: the server's own limit for small
        committed writes."""
        url = self.create_database("pgbench")
        env = {**os.environ}
        for argv in (["pgbench", "-i", "-q", "-s", "10", url], ["pgbench", "-N", "-c", str(clients), "-j", "2",
                                                                  "-T", str(seconds), url]):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 600)
            except FileNotFoundError:
                raise BenchError("pgbench is not installed (--db postgres measures its baseline with it)") from None
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv[:2])} failed: {(done.stdout + done.stderr)[-1000:]}")
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
        if not found:
            raise BenchError(f"unreadable pgbench output: {done.stdout[-500:]}")
        return float(found.group(1))

    def cleanup(self):
        for database in self.created:
            try:
                self.psql(self.admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", timeout=120)
            except BenchError as e:
                print(f"bench/run: could not drop {database}: {e}")
        self.created.clear()


def _number(value):
    """psql prints every value as text; counts and amounts come back as ints."""
    if value == "":
        return None
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value
