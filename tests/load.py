"""Load run (issue 7): many imports queued at once under the daemon, with exports running
meanwhile, then the same files imported one by one; the two stores must be identical.

    python -m tests.load --imports 20 --rows 50000 --exports 3 --workdir /tmp/load

`queued_load(workdir, ...)` does the whole run and returns a dict of figures; the test in
tests/test_load.py runs a small one. No pytest here: the module is the long run's command too.

The store's pool (`mail_pipeline_store`, granularity `op`, limit 1) holds only the steps that
write the store, so several import runs are in progress at once, by design: their staging and
validation overlap, their merges take the store one at a time, in the order their `subscribers`
steps got the slot (the merge order: usually, not necessarily, the queue order).

What it does:
1. Writes `imports` different CSV files. Their emails overlap (a sliding window over one pool
   of addresses, plus some picked from anywhere) and their values differ (name, status,
   attributes), and their options differ (lists, overwrite, blocklist mode, subscription status,
   tags, subscribe_unsubscribed, unsubscribe_others, batch size), so the final store depends on
   the order the imports merge in.
2. Starts `mail-pipeline ui` (webserver + daemon) on a fresh home and queues every import at
   once (`import FILE --detach --json`, all processes started together; optionally the first
   few before the UI starts). The queue order is the runs' storage order in the instance.
3. While the imports run, runs `exports` exports (`export --out`) through the command line, and
   samples /proc/locks for the processes holding DuckDB's lock on the store file.
4. Waits until every import is finished, then checks: all finished; no lock error in any
   import's log, any run's event log, the commands' stderr or the UI's output; one writer at a
   time: in the instance's event log, no two windows (STEP_START, or STEP_RESTARTED, to the
   step's end) of the steps that write the store (`subscribers`, `store_integrity`,
   `subscriber_export`, `export_<name>`) overlap, across all runs, and every import run has its
   `subscribers` window; at most one holder of DuckDB's file lock at any sample; every export
   finished and holds exactly the subscribers of the store as it was between two consecutive
   imports in the merge order (compared with the replay below). Whether the merge order was the
   queue order, and the most import runs in progress at once, are figures, not checks.
5. In a second fresh home, imports the same files one by one in the merge order (the order of
   the `subscribers` steps' first STEP_START; foreground `import FILE --json`), noting the store
   after each, and compares the final stores table by table, and each import's stats. The replay
   runs after the daemon's run or alongside it; alongside, an import is handed to the replayer
   only once its place in the merge order is settled (see `_MergeOrder`), and the order replayed
   is checked against the final merge order all the same. Timestamps written from the clock are
   compared through the batch that wrote them: each such value equals its batch's
   `import_batches.committed_at` (or the step's in `import_steps`), so it is replaced by
   (merge position, batch) in both stores; import ids become merge positions too. Nothing else
   is left out.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from queue import SimpleQueue
from typing import Optional

import duckdb

LOCK_ERROR = re.compile(r"could not set lock|conflicting lock|database is locked|"
                        r"lock (?:error|timeout)|\block\b", re.IGNORECASE)
LISTS = ["news", "promo", "vip", "weekly"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk"]
# The steps that write the store, all in its pool (assets/imports.py, assets/exports.py): the
# merge, the store check, a one-off export, a named export. Named here rather than read from the
# runs' plans, so that a step dropped from the pool by mistake shows as an overlap.
MERGE_STEP = "subscribers"
WRITER_STEP = re.compile(r"subscribers|store_integrity|subscriber_export|export_\w+")


def _say(text: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the files -------------------------------------------------------------------------------------

def _email(i: int) -> str:
    return f"user{i}.{'abcdefgh'[i % 8]}@{DOMAINS[i % len(DOMAINS)]}"


def make_files(folder: Path, imports: int, rows: int, seed: int) -> list[dict]:
    """`imports` CSV files and each one's command-line options; deterministic for a seed."""
    folder.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    step = max(rows // 2, 1)
    pool = step * (imports + 1)  # the addresses the files draw from
    blocklist = {imports // 2} if imports >= 4 else set()
    others = {imports - 2} if imports >= 6 else set()  # unsubscribe_others (the file is clean)
    specs = []
    for k in range(imports):
        clean = k in others
        path = folder / f"import-{k:03d}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write("email,name,status,attributes\n")
            start, seen = k * step, []
            for n in range(rows):
                r = rnd.random()
                if not clean and r < 0.01:
                    email = rnd.choice(["not-an-email", "x@", "@example.com", "a b@example.com"])
                elif not clean and r < 0.02 and seen:
                    email = rnd.choice(seen)  # a duplicate within the file
                else:
                    i = rnd.randrange(pool) if r < 0.12 else start + n
                    email = _email(i)
                    if r > 0.95:
                        email = f"  {email.upper()} "
                    seen.append(email)
                name = "" if rnd.random() < 0.1 else f"Name {n} of file {k}"
                status = rnd.choice(["enabled", "enabled", "enabled", "disabled", ""])
                attributes = ("" if rnd.random() < 0.2 else
                              json.dumps({"file": k, "score": rnd.randrange(1000)}).replace('"', '""'))
                f.write(f'{email},{name},{status},"{attributes}"\n' if attributes else
                        f"{email},{name},{status},\n")
        args = []
        for name in sorted(rnd.sample(LISTS, rnd.choice([1, 1, 2]))):
            args += ["--list", name]
        if k in blocklist:
            args += ["--mode", "blocklist"]
        else:
            status = rnd.choice([None, None, "confirmed", "unconfirmed", "unsubscribed"])
            if status:
                args += ["--subscription-status", status]
            if rnd.random() < 0.25:
                args += ["--subscribe-unsubscribed"]
        if k in others:
            args += ["--unsubscribe-others"]
        if rnd.random() < 0.5:
            args += ["--overwrite"]
        if rnd.random() < 0.3:
            args += ["--tag", f"file{k}"]
        if rnd.random() < 0.5:  # several batches (several transactions) per import
            params = folder / f"import-{k:03d}.params.json"
            params.write_text(json.dumps({"batch_size": max(rows // rnd.choice([2, 3, 5]), 1)}))
            args += ["--params", str(params)]
        specs.append({"file": str(path), "args": args, "rows": rows})
    return specs


# --- processes ---------------------------------------------------------------------------------------

def _env(home: Path) -> dict:
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    return env


def _cli(home: Path, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UI:
    """`mail-pipeline ui` on a fresh home, in its own process group; its output goes to a file."""

    def __init__(self, home: Path, output: Path):
        self.port = _free_port()
        self.output = output
        self._out = open(output, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "ui", "--port", str(self.port)],
            env=_env(home), stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_up(self, timeout: float) -> float:
        started = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql",
                                         data=json.dumps({"query": "{ version }"}).encode(),
                                         headers={"Content-Type": "application/json"})
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the UI stopped (exit {self.proc.returncode}); see {self.output}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the UI did not come up in {timeout:.0f} s; see {self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


class LockSampler(threading.Thread):
    """Samples /proc/locks: how many processes hold DuckDB's own lock on the store file at once.
    Waiters (lines with '->') do not count."""

    def __init__(self, database: Path, interval: float = 0.02):
        super().__init__(daemon=True)
        self.paths = {"duckdb_file": database}
        self.interval = interval
        self.max_holders = {name: 0 for name in self.paths}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            inodes = {}
            for name, path in self.paths.items():
                try:
                    inodes[os.stat(path).st_ino] = name
                except OSError:
                    pass
            if not inodes:
                continue
            holders = {name: set() for name in self.paths}
            try:
                text = Path("/proc/locks").read_text()
            except OSError:
                return
            for line in text.splitlines():
                fields = line.split()
                if len(fields) < 6 or fields[1] == "->":
                    continue
                inode = int(fields[5].rsplit(":", 1)[-1])
                if inode in inodes:
                    holders[inodes[inode]].add(fields[4])
            self.samples += 1
            for name, pids in holders.items():
                self.max_holders[name] = max(self.max_holders[name], len(pids))

    def stop(self) -> dict:
        self._halt.set()
        self.join(timeout=5)
        return {"samples": self.samples, "max_holders": dict(self.max_holders)}


# --- the Dagster instance of a home ------------------------------------------------------------------

def _instance(home: Path):
    import dagster as dg
    return dg.DagsterInstance.from_config(str(home / "dagster"))


def _runs(inst) -> list:
    """Every run's record, in storage order (the order the daemon's queue takes them in)."""
    return sorted(inst.get_run_records(), key=lambda r: r.storage_id)


def _partition(record) -> Optional[str]:
    return record.dagster_run.tags.get("dagster/partition")


def _scan(text: str, where: str, hits: list) -> None:
    for line in text.splitlines():
        if LOCK_ERROR.search(line):
            hits.append(f"{where}: {line.strip()[:300]}")


def _scan_runs(inst, records, hits: list) -> None:
    from dagster._serdes import serialize_value
    for record in records:
        for entry in inst.all_logs(record.dagster_run.run_id):
            _scan(serialize_value(entry), f"run {record.dagster_run.run_id[:8]} event log", hits)


def _overlaps(intervals: list[tuple[float, float, str]]) -> tuple[int, list[str]]:
    """The most intervals open at once, and the pairs that overlap."""
    events = sorted([(s, 1, n) for s, e, n in intervals] + [(e, -1, n) for s, e, n in intervals],
                    key=lambda t: (t[0], t[1]))  # an end before a start at the same instant
    open_now, most = set(), 0
    pairs = []
    for _, delta, name in events:
        if delta == 1:
            pairs += [f"{other} / {name}" for other in open_now]
            open_now.add(name)
            most = max(most, len(open_now))
        else:
            open_now.discard(name)
    return most, pairs


def _step_windows(inst, records) -> list[dict]:
    """Every step's windows in the runs' event logs: from STEP_START (STEP_RESTARTED for a retry)
    to the step's next end. A window never closed (a worker that died) ends now, so that it
    overlaps whatever wrote after it."""
    import dagster as dg
    T = dg.DagsterEventType
    starts, ends = {T.STEP_START, T.STEP_RESTARTED}, {T.STEP_SUCCESS, T.STEP_FAILURE, T.STEP_UP_FOR_RETRY}
    windows, now = [], time.time()
    for record in records:
        run = record.dagster_run
        label = f"{run.job_name}:{_partition(record) or run.run_id[:8]}"
        opened: dict[str, float] = {}

        def window(step: str, start: float, end: float) -> dict:
            clock = time.strftime("%H:%M:%S", time.localtime(start)) + f".{int(start * 1000) % 1000:03d}"
            return {"run_id": run.run_id, "step": step, "start": start, "end": end,
                    "name": f"{label}/{step}@{clock}"}  # (unique: it names an overlap)

        for r in inst.get_records_for_run(run.run_id, of_type=starts | ends).records:
            entry = r.event_log_entry
            if entry.dagster_event_type in starts:
                opened[entry.step_key] = entry.timestamp
            elif entry.step_key in opened:
                windows.append(window(entry.step_key, opened.pop(entry.step_key), entry.timestamp))
        windows += [window(step, start, now) for step, start in opened.items()]
    return windows


def _writers(windows: list[dict], import_run_ids: list[str]) -> dict:
    """One writer at a time: the windows of the steps that write the store, across all runs, and
    whether every import run has its merge among them (a check that saw no merge proves nothing)."""
    writing = [w for w in windows if WRITER_STEP.fullmatch(w["step"])]
    most, pairs = _overlaps([(w["start"], w["end"], w["name"]) for w in writing])
    merged = {w["run_id"] for w in writing if w["step"] == MERGE_STEP}
    return {"windows": len(writing), "max_concurrent": most, "overlapping": pairs[:10],
            "overlapping_pairs": len(pairs), "step_keys": sorted({w["step"] for w in writing}),
            "other_step_keys": sorted({w["step"] for w in windows} - {w["step"] for w in writing}),
            "import_runs_without_merge": [r[:8] for r in import_run_ids if r not in merged]}


def _merge_order(windows: list[dict], order: list[dict]) -> list[dict]:
    """The imports in the order their merges took the store: their `subscribers` step's first
    start. An import whose merge never started comes last, in queue order (sorted is stable)."""
    first: dict[str, float] = {}
    for w in windows:
        if w["step"] == MERGE_STEP:
            first[w["run_id"]] = min(w["start"], first.get(w["run_id"], w["start"]))
    return sorted(order, key=lambda q: first.get(q["run_id"], float("inf")))


def _merge_start(inst, run_id: str) -> Optional[float]:
    """When the run's merge (its `subscribers` step) first started; None before it has."""
    import dagster as dg
    records = inst.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return min((r.event_log_entry.timestamp for r in records
                if r.event_log_entry.step_key == MERGE_STEP), default=None)


class _MergeOrder:
    """The merge order learnt while the imports run, for a replay alongside. Each run's event log
    is read on its own, so one scan may see a merge and miss an earlier one that started between
    two reads. But the pool starts a merge only after the writer before it ended, so after the
    earlier merge's STEP_START was written: a scan that begins after a merge was seen finds every
    merge that started before it. `settled()` hands out only those, in order. (If the pool failed
    that, the replay's order differs from the final merge order, and that is checked.)"""

    def __init__(self, inst, order: list[dict]):
        self.inst, self.unseen = inst, list(order)
        self.seen: dict[str, tuple[float, dict]] = {}  # run id → (merge start, import)
        self.handed: set[str] = set()

    def settled(self) -> list[dict]:
        """One scan; the imports whose place is newly settled, in merge order."""
        horizon = max((t for t, _ in self.seen.values()), default=float("-inf"))
        for q in list(self.unseen):
            started = _merge_start(self.inst, q["run_id"])
            if started is not None:
                self.seen[q["run_id"]] = (started, q)
                self.unseen.remove(q)
        ready = sorted((t, n, q) for n, (t, q) in enumerate(self.seen.values())
                       if t <= horizon and q["run_id"] not in self.handed)
        return self._hand([q for _, _, q in ready])

    def rest(self, merge_order: list[dict]) -> list[dict]:
        """Once every run ended: the imports not handed out yet, in the final merge order."""
        return self._hand([q for q in merge_order if q["run_id"] not in self.handed])

    def _hand(self, imports: list[dict]) -> list[dict]:
        self.handed.update(q["run_id"] for q in imports)
        return imports


# --- the stores ----------------------------------------------------------------------------------------

_DIGEST = ("SELECT count(*), md5(coalesce(string_agg(email || '|' || status || '|' || "
           "coalesce(name, ''), chr(10) ORDER BY email), '')) FROM {source}")


def store_digest(database: Path) -> tuple[int, str]:
    """Subscribers (email, status, name) of a store: count and digest; (0, digest of nothing)
    when there is no store."""
    if not database.exists():
        return duckdb.sql(_DIGEST.format(source="(SELECT ''::VARCHAR AS email, '' AS status, "
                                         "'' AS name WHERE false)")).fetchall()[0]
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(_DIGEST.format(source="subscribers")).fetchone()
    finally:
        con.close()


def export_digest(path: Path, fmt: str) -> tuple[int, str]:
    reader = {"csv": "read_csv({p}, all_varchar = true, header = true)",
              "jsonl": "read_json({p}, format = 'newline_delimited')",
              "parquet": "read_parquet({p})"}[fmt].format(p="'" + str(path).replace("'", "''") + "'")
    return duckdb.sql(_DIGEST.format(source=reader)).fetchall()[0]


def compare_stores(a: Path, b: Path, order_a: dict[str, int], order_b: dict[str, int]) -> dict:
    """Table by table, the rows of store `a` and store `b`, import ids (provenance's included)
    replaced by merge positions
    (`order_*`: import id → position) and clock timestamps by the batch that wrote them."""
    con = duckdb.connect()
    try:
        for alias, path, order in (("a", a, order_a), ("b", b, order_b)):
            con.execute(f"ATTACH '{path}' AS {alias} (READ_ONLY)")
            con.execute(f"CREATE TEMP TABLE pos_{alias} (import_id VARCHAR, pos INTEGER)")
            con.executemany(f"INSERT INTO pos_{alias} VALUES (?, ?)", list(order.items()))
            # Every instant a batch (or a step) committed, with what committed then.
            con.execute(f"""
                CREATE TEMP TABLE clock_{alias} AS
                SELECT t, min(what) AS what, count(*) AS n FROM (
                  SELECT committed_at AS t, 'import ' || p.pos || ' batch ' || batch AS what
                  FROM {alias}.import_batches JOIN pos_{alias} p USING (import_id)
                  UNION ALL
                  SELECT committed_at, 'import ' || p.pos || ' step ' || step
                  FROM {alias}.import_steps JOIN pos_{alias} p USING (import_id)) GROUP BY t""")
        collisions = sum(con.execute(f"SELECT count(*) FROM clock_{x} WHERE n > 1").fetchone()[0]
                         for x in "ab")
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'a' ORDER BY table_name"
        ).fetchall()]
        result = {"tables": {}, "clock_collisions": collisions}
        for table in tables:
            columns = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'a' "
                "AND table_name = ? ORDER BY column_index", [table]).fetchall()
            views = {}
            for alias in "ab":
                select, joins = [], []
                for n, (column, kind) in enumerate(columns):
                    quoted = '"' + column.replace('"', '""') + '"'
                    if column in ("import_id", "created_by", "updated_by"):  # (provenance: ids too)
                        joins.append(f"LEFT JOIN pos_{alias} j{n} ON j{n}.import_id = x.{quoted}")
                        select.append(f"coalesce(j{n}.pos::VARCHAR, 'id ' || x.{quoted}) AS {quoted}")
                    elif kind.startswith("TIMESTAMP"):
                        joins.append(f"LEFT JOIN clock_{alias} j{n} ON j{n}.t = x.{quoted}")
                        select.append(f"coalesce(j{n}.what, x.{quoted}::VARCHAR) AS {quoted}")
                    else:
                        select.append(f"x.{quoted}")
                views[alias] = f"SELECT {', '.join(select)} FROM {alias}.{table} x {' '.join(joins)}"
            con.execute(f"CREATE TEMP TABLE va AS {views['a']}")
            con.execute(f"CREATE TEMP TABLE vb AS {views['b']}")
            [(rows_a,)] = con.execute("SELECT count(*) FROM va").fetchall()
            [(rows_b,)] = con.execute("SELECT count(*) FROM vb").fetchall()
            only_a = con.execute("SELECT * FROM va EXCEPT ALL SELECT * FROM vb").fetchall()
            only_b = con.execute("SELECT * FROM vb EXCEPT ALL SELECT * FROM va").fetchall()
            clocked = 0
            for n, (column, kind) in enumerate(columns):
                if kind.startswith("TIMESTAMP"):
                    clocked += con.execute(
                        f"SELECT count(*) FROM va WHERE \"{column}\" LIKE 'import %'").fetchone()[0]
            result["tables"][table] = {
                "rows": rows_a, "rows_other": rows_b, "only_daemon": len(only_a),
                "only_serial": len(only_b), "timestamps_from_batches": clocked,
                "examples": [repr(r)[:300] for r in (only_a[:3] + only_b[:3])]}
            con.execute("DROP TABLE va; DROP TABLE vb")
        result["identical"] = all(t["only_daemon"] == 0 and t["only_serial"] == 0
                                  and t["rows"] == t["rows_other"] for t in result["tables"].values())
        return result
    finally:
        con.close()


# --- the run ---------------------------------------------------------------------------------------------

class _Replay(threading.Thread):
    """The files imported one by one (foreground `import FILE --json`) on a second home, in the
    order they are handed in (`feed`, then `close`), noting the store's subscribers before and
    after each. `seconds` counts the imports, not the waits for the next one to be handed in."""

    def __init__(self, home: Path, hits: list[str]):
        super().__init__(daemon=True)
        self.home, self.hits = home, hits
        self.todo: SimpleQueue = SimpleQueue()
        self.order: list[dict] = []  # the imports replayed, in the order replayed
        self.prefixes: list[tuple[int, str]] = []
        self.documents: list[dict] = []
        self.seconds = 0.0

    def feed(self, imports: list[dict]) -> None:
        for q in imports:
            self.todo.put(q)

    def close(self) -> None:
        self.todo.put(None)

    def run(self) -> None:
        self.prefixes.append(store_digest(self.home / "subscribers.duckdb"))
        while (q := self.todo.get()) is not None:
            started, n = time.monotonic(), len(self.order)
            self.order.append(q)
            proc = _cli(self.home, "import", q["file"], *q["args"], "--json")
            out, err = proc.communicate(timeout=900)
            _scan(err, f"serial import {n} stderr", self.hits)
            self.documents.append(json.loads(out) if out.strip() else {"state": "no output"})
            self.prefixes.append(store_digest(self.home / "subscribers.duckdb"))
            self.seconds += time.monotonic() - started
            if n % 5 == 4:
                _say(f"serial replay: {n + 1} imported")
        self.seconds = round(self.seconds, 1)
        _say(f"serial replay: {len(self.order)} imported in {self.seconds} s")


def _export_format(j: int) -> str:
    return ("csv", "jsonl", "parquet")[j % 3]


def queued_load(workdir, imports: int = 20, rows: int = 300, exports: int = 2, seed: int = 7,
                queued_before_ui: int = 0, replay_alongside: bool = False,
                timeout: Optional[float] = None, ui_timeout: float = 180) -> dict:
    """The load run; returns its figures (see the module's docstring). The first
    `queued_before_ui` imports are queued before the UI (and its daemon) starts, as when a user
    queues imports and starts `mail-pipeline ui` later; the rest are queued at once with the
    daemon running. `replay_alongside` runs the one-by-one replay on the second home while the
    daemon works: each import is handed to the replayer once its place in the merge order is
    settled (`_MergeOrder`), the rest once every run ended. Quicker, but the two share the
    machine, so the timings are not the load's alone. Without it, the replay starts once every
    run ended, from the final merge order. A failed check raises nothing: `ok` and the figures
    say what held."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    daemon_home, serial_home = workdir / "daemon-home", workdir / "serial-home"
    for path in (daemon_home, serial_home):
        if path.exists():
            raise RuntimeError(f"{path} exists: give a fresh workdir")
    timeout = timeout or 300 + imports * (10 + rows / 2000)
    figures: dict = {"imports": imports, "rows_per_import": rows, "rows": imports * rows,
                     "exports": exports, "seed": seed, "queued_before_ui": queued_before_ui,
                     "replay_alongside": replay_alongside}
    t0 = time.monotonic()
    specs = make_files(workdir / "files", imports, rows, seed)
    figures["seconds_writing_files"] = round(time.monotonic() - t0, 1)
    _say(f"{imports} files of {rows} rows written in {figures['seconds_writing_files']} s")

    hits: list[str] = []
    queued: list[dict] = []
    replayer: Optional[_Replay] = None
    learner: Optional[_MergeOrder] = None

    def queue(batch: list[dict]) -> None:  # all of the batch's commands at once
        procs = [_cli(daemon_home, "import", spec["file"], *spec["args"], "--detach", "--json")
                 for spec in batch]
        failed = []
        for spec, proc in zip(batch, procs):
            out, err = proc.communicate(timeout=900)
            _scan(err, f"queue {Path(spec['file']).name} stderr", hits)
            if proc.returncode != 0:
                failed.append(f"queueing {spec['file']} failed: {err.strip()[-500:]}")
                continue
            document = json.loads(out)
            queued.append({**spec, "id": document["id"], "run_id": document["run_id"]})
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(batch)} imports not queued; {failed[0]}")

    before = specs[:queued_before_ui]
    if before:
        t_before = time.monotonic()
        queue(before)
        figures["seconds_queueing_before_ui"] = round(time.monotonic() - t_before, 1)
        _say(f"{len(before)} imports queued before the UI in {figures['seconds_queueing_before_ui']} s")
    ui = UI(daemon_home, workdir / "ui-output.txt")
    sampler = LockSampler(daemon_home / "subscribers.duckdb")
    exports_run: list[dict] = []
    try:
        figures["seconds_ui_start"] = round(ui.wait_up(ui_timeout), 1)
        _say(f"UI up on port {ui.port} in {figures['seconds_ui_start']} s")
        sampler.start()

        # The other imports, queued at once with the daemon running.
        t_queue = time.monotonic()
        queue(specs[queued_before_ui:])
        figures["seconds_queueing"] = round(time.monotonic() - t_queue, 1)
        _say(f"{imports - len(before)} imports queued at once in {figures['seconds_queueing']} s")

        inst = _instance(daemon_home)
        try:
            by_run = {q["run_id"]: q for q in queued}
            records = [r for r in _runs(inst) if r.dagster_run.run_id in by_run]
            order = [by_run[r.dagster_run.run_id] for r in records]  # the queue order
            assert len(order) == imports, "a queued import has no run"
            if replay_alongside:
                learner, replayer = _MergeOrder(inst, order), _Replay(serial_home, hits)
                replayer.start()

            # Exports while the imports run: export j starts once enough imports have started.
            thresholds = [max(1, round((j + 1) * imports / (exports + 1))) for j in range(exports)]
            deadline = t_queue + timeout
            finished, started, last_said = set(), 0, None
            while time.monotonic() < deadline:
                if ui.proc.poll() is not None:
                    raise RuntimeError(f"the UI stopped; see {ui.output}")
                statuses = {r.dagster_run.run_id: r.dagster_run.status.value
                            for r in inst.get_run_records()}
                mine = [statuses.get(q["run_id"]) for q in order]
                started = sum(s not in ("QUEUED", "NOT_STARTED") for s in mine)
                finished = {q["run_id"] for q, s in zip(order, mine) if s in ("SUCCESS", "FAILURE", "CANCELED")}
                while len(exports_run) < exports and started >= thresholds[len(exports_run)]:
                    j = len(exports_run)
                    out = workdir / "exports" / f"export-{j}.{_export_format(j)}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    exports_run.append({"format": _export_format(j), "out": str(out),
                                        "after_started": started, "proc": _cli(
                                            daemon_home, "export", "--format", _export_format(j),
                                            "--out", str(out), "--json")})
                    _say(f"export {j} ({_export_format(j)}) started with {started} imports started")
                if learner is not None:
                    replayer.feed(learner.settled())
                said = f"{started} started, {len(finished)} finished of {imports}"
                if said != last_said:
                    _say(said)
                    last_said = said
                if len(finished) == imports:
                    break
                time.sleep(0.5)
            figures["seconds_imports"] = round(time.monotonic() - t_queue, 1)
            figures["timed_out"] = len(finished) < imports
            for export in exports_run:
                out, err = export.pop("proc").communicate(timeout=600)
                _scan(err, f"export {export['out']} stderr", hits)
                export["document"] = json.loads(out) if out.strip() else {"state": "no output"}
                export["stderr"] = err.strip()[-300:]
            figures["seconds_total_daemon"] = round(time.monotonic() - t_queue, 1)
            _say(f"imports done in {figures['seconds_imports']} s; exports done")

            # One writer at a time: the steps that wrote the store, across all runs (the daemon's
            # and the export commands'), from the event log; and the order the merges took it in.
            time.sleep(2)  # named-export runs the automation sensor may add at the end
            all_records = _runs(inst)
            import_records = [r for r in all_records if r.dagster_run.job_name == "import_job"]
            windows = _step_windows(inst, all_records)
            figures["writers"] = _writers(windows, [q["run_id"] for q in order])
            merge_order = _merge_order(windows, order)
            positions = {q["run_id"]: n for n, q in enumerate(order)}
            figures["merge_order_queue_positions"] = [positions[q["run_id"]] for q in merge_order]
            figures["merge_order_is_queue_order"] = merge_order == order  # (not a check: see the docstring)
            if learner is not None:
                replayer.feed(learner.rest(merge_order))
                replayer.close()

            # The runs: several imports in progress at once is the design; how many is a figure.
            cli_export_records = [r for r in all_records if r.dagster_run.job_name == "export_job"]
            daemon_records = [r for r in all_records if r.dagster_run.job_name != "export_job"]
            most_imports, _ = _overlaps([(r.start_time, r.end_time or time.time(), r.dagster_run.run_id)
                                         for r in import_records if r.start_time])
            figures["runs"] = {
                "import_runs": len(import_records),
                "other_daemon_runs": sorted({r.dagster_run.job_name for r in daemon_records
                                             if r.dagster_run.job_name != "import_job"}),
                "other_daemon_run_count": len(daemon_records) - len(import_records),
                "max_import_runs_at_once": most_imports,
                "import_seconds_each": _spread([r.end_time - r.start_time for r in import_records
                                                if r.start_time and r.end_time]),
                "cli_exports_overlapping_import_runs": sum(
                    1 for e in cli_export_records if e.start_time and any(
                        r.start_time < (e.end_time or 0) and e.start_time < (r.end_time or 0)
                        for r in import_records if r.start_time)),
            }
            _scan_runs(inst, all_records, hits)
            statuses = {r.dagster_run.run_id: r.dagster_run.status.value for r in import_records}
        finally:
            inst.dispose()
    finally:
        try:
            for export in exports_run:  # (after an error above)
                if "proc" in export:
                    export.pop("proc").kill()
        finally:
            ui.stop()
            figures["lock_sampler"] = sampler.stop() if sampler.is_alive() else {"samples": 0}
    _scan(ui.output.read_text(errors="replace"), "ui/daemon output", hits)

    # The import documents (one `imports` listing; `imports show` for the first and last).
    listing = _cli_json(daemon_home, "imports", "--scope", "all", "--per-page", "500", "--json")
    documents = {d["id"]: d for d in listing["data"]}
    for q in (order[0], order[-1]):
        shown = _cli_json(daemon_home, "imports", "show", q["id"], "--json")
        assert shown["state"] == documents[q["id"]]["state"]
    states = [documents[q["id"]]["state"] for q in order]
    figures["finished"] = states.count("finished")
    figures["states"] = {s: states.count(s) for s in sorted(set(states))}
    for q in order:
        log = daemon_home / "imports" / q["id"] / "logs" / "log.txt"
        if log.exists():
            _scan(log.read_text(errors="replace"), f"import {q['id']} log", hits)

    if replayer is None:
        replayer = _Replay(serial_home, hits)
        replayer.feed(merge_order)
        replayer.close()
        replayer.run()
    else:
        replayer.join()
    prefixes, serial_documents = replayer.prefixes, replayer.documents
    figures["replayed_in_merge_order"] = ([q["id"] for q in replayer.order]
                                          == [q["id"] for q in merge_order])
    figures["seconds_serial"] = replayer.seconds
    figures["serial_finished"] = sum(d["state"] == "finished" for d in serial_documents)

    # Each export holds the store as it was between two imports (consecutive in the merge order).
    figures["exports_ok"] = 0
    figures["export_details"] = []
    for export in exports_run:
        document = export["document"]
        detail = {"format": export["format"], "state": document.get("state"),
                  "rows": document.get("rows"), "after_started": export["after_started"]}
        if document.get("state") == "finished" and Path(export["out"]).exists():
            digest = export_digest(Path(export["out"]), export["format"])
            detail["rows_read"] = digest[0]
            detail["between_imports"] = [k for k, p in enumerate(prefixes) if p == digest]
            if digest[0] == document["rows"] and detail["between_imports"]:
                figures["exports_ok"] += 1
        else:
            detail["stderr"] = export["stderr"]
        figures["export_details"].append(detail)

    # Per import: the same categories in both homes.
    stats_equal = [documents[q["id"]]["stats"] == d.get("stats")
                   for q, d in zip(replayer.order, serial_documents)]
    figures["stats_equal"] = sum(stats_equal)
    figures["subscribers"] = prefixes[-1][0]
    comparison = compare_stores(daemon_home / "subscribers.duckdb", serial_home / "subscribers.duckdb",
                                {q["id"]: n for n, q in enumerate(merge_order)},
                                {d["id"]: n for n, d in enumerate(serial_documents) if "id" in d})
    figures["comparison"] = comparison
    figures["identical"] = comparison["identical"]
    figures["lock_errors"] = len(hits)
    figures["lock_error_lines"] = hits[:20]
    writers = figures["writers"]
    figures["max_concurrent_writers"] = max(writers["max_concurrent"],
                                            figures["lock_sampler"].get("max_holders", {}).get("duckdb_file", 0))
    figures["ok"] = bool(
        figures["finished"] == imports and not figures["timed_out"] and figures["identical"]
        and figures["lock_errors"] == 0 and writers["max_concurrent"] <= 1
        and not writers["import_runs_without_merge"]
        and figures["lock_sampler"].get("samples", 0) > 0  # (a sampler that saw nothing proves nothing)
        and all(v <= 1 for v in figures["lock_sampler"].get("max_holders", {}).values())
        and figures["replayed_in_merge_order"] and figures["exports_ok"] == exports
        and figures["serial_finished"] == imports and figures["stats_equal"] == imports)
    figures["seconds_total"] = round(time.monotonic() - t0, 1)
    _say(f"done in {figures['seconds_total']} s: ok={figures['ok']}")
    return figures


def _spread(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"min": round(values[0], 2), "median": round(values[len(values) // 2], 2),
            "max": round(values[-1], 2)}


def _cli_json(home: Path, *args) -> dict:
    proc = _cli(home, *args)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err.strip()[-500:]}")
    return json.loads(out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Queued-imports load run (issue 7).")
    ap.add_argument("--workdir", required=True, help="a fresh folder for files and homes")
    ap.add_argument("--imports", type=int, default=20)
    ap.add_argument("--rows", type=int, default=50_000, help="rows per import")
    ap.add_argument("--exports", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--queued-before-ui", type=int, default=0,
                    help="imports queued before the UI starts (the rest with it running)")
    ap.add_argument("--replay-alongside", action="store_true",
                    help="replay one by one while the daemon works (quicker, timings shared)")
    ap.add_argument("--timeout", type=float)
    a = ap.parse_args(argv)
    figures = queued_load(a.workdir, imports=a.imports, rows=a.rows, exports=a.exports,
                          seed=a.seed, queued_before_ui=a.queued_before_ui,
                          replay_alongside=a.replay_alongside, timeout=a.timeout)
    print(json.dumps(figures, indent=2, default=str))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
