#!/usr/bin/env python3
"""Crash drill for `plugd serve` (run by scripts/crash-drill.sh; Python 3 standard library only).

Starts plugd with the `ledger` test plugin (tests/plugins/ledger) and the status writer flushing
every 50 ms, then, KILLS times: waits for /healthz, lets WORKERS threads write (storage keys
through POST /plugins/ledger/put, database transactions through POST /plugins/ledger/tx) for a
random while and sends SIGKILL to the process (a share of the kills, --startup-kills, lands at a
random moment of the start instead, before anything is written); then, with the server down, it
checks the data dir and starts plugd again on it:

  acknowledged   every write whose request answered 200 is there, with its value (unique keys;
                 for a key each worker overwrites, the stored value is at least the last
                 acknowledged one);
  atomic         every transaction is all-or-nothing: the ids in `entries` and `receipts` are
                 the same set, the two balances sum to 1000000 and account 2 holds one per entry;
  intact         `PRAGMA integrity_check` answers `ok` for every SQLite database under the data
                 dir (host.db and the plugin's kv.sqlite and db.sqlite), checked on a copy of the
                 database and its -wal so that plugd itself recovers the originals;
  restarts       plugd answers /healthz (and the plugin its routes) within --start-timeout.

Prints a line per round and a summary (Markdown, for RELIABILITY.md); exits 1 at the first
violation, keeping the data dir and plugd's log for a post-mortem.
"""

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOTAL = 1_000_000  # the sum of the two balances (migrations/0001_ledger.sql)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker(threading.Thread):
    """Writes until told to stop; remembers what was acknowledged (answered 200)."""

    def __init__(self, number, port, stop, state):
        super().__init__(daemon=True)
        self.number, self.port, self.stop, self.state = number, port, stop, state
        self.rng = random.Random()

    def request(self, conn, path):
        conn.request("POST", path, headers={"Content-Length": "0"})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def run(self):
        conn = None
        s = self.state
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            i = s.next_number()
            op = self.rng.random()
            try:
                if op < 0.4:
                    key, value = f"u{i}", f"{self.rng.getrandbits(64):016x}"
                    if self.request(conn, f"/plugins/ledger/put?k={key}&v={value}") == 200:
                        s.acked_keys[key] = value
                        s.acknowledged_put()
                    else:
                        s.not_ok()
                elif op < 0.6:
                    key = f"w{self.number}"
                    if self.request(conn, f"/plugins/ledger/put?k={key}&v={i}") == 200:
                        s.acked_counters[key] = max(s.acked_counters.get(key, -1), i)
                        s.acknowledged_put()
                    else:
                        s.not_ok()
                else:
                    s.attempted_tx.add(i)
                    if self.request(conn, f"/plugins/ledger/tx?id={i}") == 200:
                        s.acked_tx.add(i)
                    else:
                        s.not_ok()
            except (OSError, http.client.HTTPException):
                # The server is gone (or going): this write was not acknowledged.
                conn.close()
                conn = None
                time.sleep(0.01)


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.counter = 0
        self.acked_keys = {}  # unique key -> value
        self.acked_counters = {}  # overwritten key -> highest acknowledged value
        self.attempted_tx = set()
        self.acked_tx = set()
        self.acked_puts = 0  # every acknowledged storage write, overwrites included
        self.refused = 0  # answers other than 200 (none are expected)

    def acknowledged_put(self):
        with self.lock:
            self.acked_puts += 1

    def not_ok(self):
        with self.lock:
            self.refused += 1

    def next_number(self):
        with self.lock:
            self.counter += 1
            return self.counter


def sqlite_files(data):
    """Every SQLite database under the data dir (by its header; empty files count too)."""
    found = []
    for path in sorted(data.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        with open(path, "rb") as f:
            head = f.read(16)
        if head == b"SQLite format 3\x00" or (head == b"" and path.suffix in (".db", ".sqlite")):
            found.append(path)
    return found


def snapshot(db, scratch):
    """A copy of a database and its -wal (not its -shm: SQLite rebuilds the index)."""
    target = scratch / db.name
    for suffix in ("", "-wal"):
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copyfile(src, str(target) + suffix)
    return target


def check(data, scratch, state):
    """Returns (problems, figures) for the data dir of a stopped server."""
    problems = []
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    copies = {}
    for db in sqlite_files(data):
        name = str(db.relative_to(data))
        sub = scratch / name.replace("/", "_")
        sub.mkdir()
        copy = snapshot(db, sub)
        copies[name] = copy
        with sqlite3.connect(copy) as conn:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        conn.close()
        if result != ["ok"]:
            problems.append(f"integrity_check of {name}: {result[:5]}")
    for needed in ("host.db", "plugins/ledger/kv.sqlite", "plugins/ledger/db.sqlite"):
        if needed not in copies and (state.acked_keys or state.acked_tx or needed == "host.db"):
            problems.append(f"{needed} is missing")
    figures = {"databases": len(copies)}

    if "plugins/ledger/kv.sqlite" in copies:
        conn = sqlite3.connect(copies["plugins/ledger/kv.sqlite"])
        stored = {k: bytes(v).decode() for k, v in conn.execute("SELECT key, value FROM kv")}
        conn.close()
        lost = [k for k, v in state.acked_keys.items() if stored.get(k) != v]
        for k, v in state.acked_counters.items():
            if k not in stored or int(stored[k]) < v:
                lost.append(f"{k} (acknowledged {v}, stored {stored.get(k)})")
        if lost:
            problems.append(f"{len(lost)} acknowledged storage writes lost: {lost[:5]}")
        figures["keys"] = len(stored)

    if "plugins/ledger/db.sqlite" in copies:
        conn = sqlite3.connect(copies["plugins/ledger/db.sqlite"])
        entries = {r[0] for r in conn.execute("SELECT id FROM entries")}
        receipts = {r[0] for r in conn.execute("SELECT id FROM receipts")}
        balances = dict(conn.execute("SELECT id, balance FROM accounts"))
        conn.close()
        lost = state.acked_tx - entries
        if lost:
            problems.append(f"{len(lost)} acknowledged transactions lost: {sorted(lost)[:5]}")
        if entries != receipts:
            half = sorted(entries ^ receipts)
            problems.append(f"{len(half)} partial transactions (in one table only): {half[:5]}")
        if entries - state.attempted_tx:
            problems.append(f"ids nobody sent: {sorted(entries - state.attempted_tx)[:5]}")
        if sum(balances.values()) != TOTAL or balances.get(2) != len(entries):
            problems.append(f"balances {balances} for {len(entries)} entries: a partial transaction")
        figures["entries"] = len(entries)

    if "host.db" in copies:
        conn = sqlite3.connect(copies["host.db"])
        figures["status_rows"] = conn.execute("SELECT count(*) FROM plugin_metrics").fetchone()[0]
        conn.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return problems, figures


def get(port, path, timeout=2):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_ready(port, proc, bound):
    """Seconds until /healthz and the plugin's route answer 200, or None."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if proc.poll() is not None:
            return None
        try:
            if get(port, "/healthz") == 200 and get(port, "/plugins/ledger/totals") == 200:
                return time.monotonic() - start
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plugd", required=True, help="the plugd binary")
    p.add_argument("--plugin", required=True, help="the ledger plugin's directory")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--min-run", type=float, default=0.2, help="seconds of load before a kill, at least")
    p.add_argument("--max-run", type=float, default=2.0, help="seconds of load before a kill, at most")
    p.add_argument("--start-timeout", type=float, default=30.0, help="bound on a restart, seconds")
    p.add_argument("--startup-kills", type=float, default=0.1,
                   help="the share of kills that land while plugd starts (before /healthz answers)")
    p.add_argument("--status-interval", default="50ms", help="status.interval of the host config")
    p.add_argument("--work", help="working directory (default: a new temp dir, removed on success)")
    args = p.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="plugd-crash-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    port, admin_port = free_port(), free_port()
    config = work / "plugd.yaml"
    config.write_text(
        f"""server: {{ listen: "127.0.0.1:{port}" }}
admin: {{ listen: "127.0.0.1:{admin_port}", token: crash-drill }}
data_dir: "{data}"
status: {{ enabled: true, interval: {args.status_interval} }}
plugins:
  plugins:
    - name: ledger
      path: "{Path(args.plugin).resolve()}"
      permissions: {{ router: true, database: true }}
"""
    )
    log = open(work / "plugd.log", "ab")
    env = {**os.environ, "PLUGD_LOG": os.environ.get("PLUGD_LOG", "warn")}
    state = State()
    starts, runs = [], []
    print(f"crash drill: {args.kills} kills, {args.workers} writers, work dir {work}", flush=True)
    databases = 0
    startup_kills = 0
    for round_no in range(1, args.kills + 1):
        log.write(f"--- round {round_no}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [args.plugd, "serve", "--config", str(config)],
            stdout=log,
            stderr=log,
            env=env,
        )
        during_start = round_no > 1 and random.random() < args.startup_kills
        if during_start:
            # A kill while plugd starts: opening the databases, loading the plugin, the first
            # status write. The next round's start must recover from it.
            run = random.uniform(0, statistics.median(starts) * 1.2)
            time.sleep(run)
            startup_kills += 1
        else:
            ready = wait_ready(port, proc, args.start_timeout)
            if ready is None:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                print(f"FAIL round {round_no}: plugd did not answer within {args.start_timeout}s "
                      f"(exit {proc.returncode}); log: {work / 'plugd.log'}", file=sys.stderr)
                return 1
            starts.append(ready)
            stop = threading.Event()
            workers = [Worker(n, port, stop, state) for n in range(args.workers)]
            for w in workers:
                w.start()
            run = random.uniform(args.min_run, args.max_run)
            time.sleep(run)
        os.kill(proc.pid, signal.SIGKILL)  # this drill's own plugd, by the PID it started
        proc.wait()
        if not during_start:
            runs.append(run)
            stop.set()
            for w in workers:
                w.join()
        problems, figures = check(data, work / "check", state)
        what = (
            f"killed {run * 1000:4.0f} ms into its start"
            if during_start
            else f"up in {ready * 1000:5.0f} ms, killed after {run:4.2f} s"
        )
        print(
            f"round {round_no:3}: {what}; "
            f"acknowledged {state.acked_puts} storage writes, {len(state.acked_tx)} transactions; "
            f"stored {figures.get('keys', 0)} keys, {figures.get('entries', 0)} transactions; "
            f"{figures.get('status_rows', 0)} status rows; {figures['databases']} databases ok"
            if not problems else f"round {round_no:3}: FAIL",
            flush=True,
        )
        databases = figures["databases"]
        if problems:
            for problem in problems:
                print(f"FAIL round {round_no}: {problem}", file=sys.stderr)
            print(f"kept {work} (data dir and plugd.log)", file=sys.stderr)
            return 1

    # A last start: the data of the last kill is served back by plugd itself.
    proc = subprocess.Popen(
        [args.plugd, "serve", "--config", str(config)], stdout=log, stderr=log, env=env
    )
    ready = wait_ready(port, proc, args.start_timeout)
    final_ok = ready is not None
    if final_ok:
        starts.append(ready)
        keys = list(state.acked_keys.items())
        sample = random.sample(keys, min(50, len(keys)))
        for k, v in sample:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/plugins/ledger/get?k={k}")
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            if resp.status != 200 or body != v:
                print(f"FAIL final: GET {k} answered {resp.status} {body!r}, acknowledged {v!r}",
                      file=sys.stderr)
                final_ok = False
                break
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not final_ok:
        print(f"FAIL final start or read-back; kept {work}", file=sys.stderr)
        return 1

    first, restarts = starts[0] * 1000, sorted(s * 1000 for s in starts[1:] or starts)
    print()
    print("| kills (during a start) | storage writes acknowledged | transactions acknowledged | "
          "lost | partial transactions | integrity_check | starts answered | "
          "restart ms median / max |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.kills} ({startup_kills}) | {state.acked_puts} | {len(state.acked_tx)} | 0 | 0 | "
          f"ok, {databases} databases × {args.kills} kills | {len(starts)}/{len(starts)} | "
          f"{statistics.median(restarts):.0f} / {restarts[-1]:.0f} |")
    print(f"\n(first start, compiling the component: {first:.0f} ms; requests sent: {state.counter}; "
          f"answered other than 200: {state.refused}; load before a kill {min(runs):.2f}–"
          f"{max(runs):.2f} s, {args.workers} writers)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
