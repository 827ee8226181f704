"""Benchmark: the performance targets of issue 15, each a ratio of figures taken in one run.

    python bench/benchmark.py                                   # the full run; rewrites docs/benchmarks.*
    python bench/benchmark.py --sizes 1000,20000 --no-write     # quick check (CI): prints only

Regenerating docs/benchmarks.md and docs/benchmarks.png is the first command, after
`pip install -e ".[bench]"` (dlt for the baseline, matplotlib for the plot; without them both are
skipped with a note). It takes a while at 10,000,000 rows: run it on a quiet machine.

For each size N of --sizes (default 1,000 to 10,000,000), with files from
shared/bench/make_subscribers.py kept in bench-data/ by name:
  - a base file of N/2 subscribers and an import file of N, both from subscriber 0, so the store
    already holds half of what is imported;
  - DuckDB reference: `CREATE TABLE subscribers AS SELECT * FROM read_csv(import file,
    all_varchar = true)`, inside its process;
  - our import: a fresh home, the base imported (untimed), then the `mail-pipeline import FILE`
    command of the import file, timed as a whole process (start-up included) with its peak memory,
    and its run from start to end from the run record; then the same command once more, which has
    nothing left to change;
  - export: `mail-pipeline export --format csv` of that store, against a DuckDB
    `COPY (SELECT <the export's columns> FROM subscribers ORDER BY email) TO 'file.csv' (HEADER)`
    of the same store;
  - generic loader: Polars validation (email regex, trim and lower-case, dedup on email) loaded by
    dlt with a merge on email into a DuckDB file that already holds the base (loaded untimed),
    timed as a whole process.
Once per run, the fixed cost: a 10-row `mail-pipeline import` from command start to exit against a
`python -c` that materialises one trivial asset with `dagster.materialize` (medians, alternating).

Every measured side runs in its own child process, so its peak memory (max RSS) is its own and
one side's warm caches or imports never help another. --repeat K keeps the median of K rounds.

The targets of issue 15 (a target whose size was not run is reported as not measured):
  1. 10M rows: the import command ≤ 3 × DuckDB's load, and ≤ 1.0 × the Polars + dlt process
  2. 1M rows: the import command ≤ 5 × DuckDB's load
  3. import peak memory ≤ 1.5 GB (read as 1500 MiB) at 10M, and the 10M peak ≤ 2 × the 1M peak
  4. fixed cost: the 10-row command ≤ 1.5 × the trivial materialize
  5. export of 10M subscribers ≤ 2 × DuckDB's sorted COPY
  6. re-import of the unchanged 1M file ≤ 0.3 × its first import (their runs, from the run record)
"""
import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE = ROOT.parent / "shared" / "bench" / "make_subscribers.py"
DOCS = ROOT / "docs"
# Where the time goes and why a target is missed: written by hand from these figures, and
# included in docs/benchmarks.md each time it is regenerated.
ANALYSIS = ROOT / "bench" / "analysis.md"
DEFAULT_SIZES = "1000,10000,100000,1000000,10000000"
LISTS = ["bench"]
M, TEN_M = 1_000_000, 10_000_000
PEAK_LIMIT = 1500  # MiB: "1.5 GB" read strictly (ru_maxrss is in KiB, so peaks are in MiB throughout)
# A deliberately simple check, as a generic loader would write it; our own rules are stricter.
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
DLT_CHUNK = 250_000  # rows per Arrow table handed to dlt
TRIVIAL = ("import dagster as dg\n"
           "@dg.asset\n"
           "def one():\n"
           "    return 1\n"
           "assert dg.materialize([one]).success\n")
BENCH_EXTRA = 'pip install -e ".[bench]"'


class ChildFailed(Exception):
    """A measured process exited non-zero; the message ends with its last lines of stderr."""


def say(text: str) -> None:
    """Progress goes to stderr so stdout keeps only the tables."""
    print(text, file=sys.stderr, flush=True)


# --- test data -------------------------------------------------------------------------------------

def generate(rows: int, start: int, out: Path) -> Path:
    """`rows` subscribers from `start`, made once and then kept by name."""
    if not out.exists():
        say(f"generating {out.name}")
        # Written under another name first, so an interrupted run never leaves a short file
        # that a later run would take for a finished one.
        partial = out.with_name(out.name + ".partial")
        subprocess.run([sys.executable, str(MAKE), "--rows", str(rows), "--start", str(start),
                        "--out", str(partial)], check=True)
        partial.rename(out)
    return out


def files(rows: int, data: Path) -> tuple[Path, Path]:
    """The base (first N/2 subscribers) and the import file (first N): half the import is known."""
    base = generate(rows // 2, 0, data / f"base-{rows // 2}.csv")
    return base, generate(rows, 0, data / f"import-{rows}-from-0.csv")


# --- running measured processes ---------------------------------------------------------------------

def env_for(home: Path | None = None) -> dict:
    env = dict(os.environ)
    # The home folder decides the Dagster instance; an inherited DAGSTER_HOME would share one.
    env.pop("DAGSTER_HOME", None)
    if home is not None:
        env["MAIL_PIPELINE_HOME"] = str(home)
    return env


def measure(args: list, env: dict, label: str) -> dict:
    """Run one process to its end: its wall seconds, its own peak memory and its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([str(a) for a in args], env=env, stdout=out, stderr=err)
        # wait4, not wait: it also gives the child's resource usage, whose max RSS is its peak.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise ChildFailed(f"{label} failed:\n{tail}")
    return {"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "stdout": stdout}


def warm(path: Path) -> None:
    """Read a file once, so that every measured side finds it in the page cache: this machine
    reclaims cold pages eagerly, and a cold read of a 10M-row file costs more than the load."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def child(kind: str, *args, home: Path | None = None) -> dict:
    """Run one of this script's child sides (`--child KIND …`); what it printed, plus its
    whole-process seconds and peak memory."""
    for arg in args:
        if str(arg).endswith(".csv") and Path(arg).is_file():
            warm(Path(arg))
    run = measure([sys.executable, __file__, "--child", kind, *args], env_for(home),
                  f"{kind} {' '.join(Path(str(a)).name for a in args)}")
    result = json.loads(run["stdout"].strip().splitlines()[-1])
    result.update(command_seconds=run["wall"], peak_mb=run["peak_mb"])
    return result


def cli() -> str:
    """The `mail-pipeline` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "mail-pipeline"
    found = str(beside) if beside.exists() else shutil.which("mail-pipeline")
    if not found:
        raise SystemExit("no mail-pipeline command: install the project first (pip install -e .)")
    return found


# --- the child sides: each prints one JSON line with the seconds of its measured part ---------------

def child_run_figures(import_id: str) -> None:
    """In the child (untimed): the import's latest run, start to end, and its seconds per step."""
    from service import jobs as runs, state

    run = state.runs_of(state.records(), import_id)[0]
    print(json.dumps({"seconds": run.end_time - run.start_time,
                      "stages": stage_seconds(runs.instance(), run.run_id)}))


def child_import(source: str, *lists: str) -> None:
    """In the child: load the code, then time only the import itself."""
    from service import jobs as runs, state
    from mail_pipeline.options import build

    inst = runs.instance()
    started = time.perf_counter()
    import_id, _ = runs.create_import(inst)
    run = runs.launch_import(inst, import_id, build({"source": source, "lists": list(lists)}), detach=False)
    document = state.document(state.records(), import_id)
    seconds = time.perf_counter() - started
    if document["state"] != "finished":
        raise SystemExit(f"import {import_id} {document['state']}: {document['error_message']}")
    print(json.dumps({"seconds": seconds, "stats": document["stats"],
                      "stages": stage_seconds(inst, run.run_id)}))


def stage_seconds(inst, run_id: str) -> dict:
    """Seconds each asset step took, from the run's own events."""
    import dagster as dg

    started, took = {}, {}
    for record in inst.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        kind = entry.dagster_event and entry.dagster_event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            started[entry.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            took[entry.step_key] = round(entry.timestamp - started[entry.step_key], 2)
    return took


def child_duckdb_load(source: str, database: str) -> None:
    import duckdb

    Path(database).unlink(missing_ok=True)
    con = duckdb.connect(database)
    started = time.perf_counter()
    con.execute("CREATE TABLE subscribers AS SELECT * FROM read_csv(?, all_varchar = true)", [source])
    con.close()  # included: the table is only on disk once the connection is closed
    print(json.dumps({"seconds": time.perf_counter() - started}))


def child_duckdb_copy(database: str, out: str) -> None:
    import duckdb
    from mail_pipeline.exports import COLUMNS

    con = duckdb.connect(database, read_only=True)
    stored = {row[0] for row in con.execute("DESCRIBE subscribers").fetchall()}
    columns = ", ".join(c for c in COLUMNS if c in stored)  # (`lists` is gathered, not stored)
    started = time.perf_counter()
    con.execute(f"COPY (SELECT {columns} FROM subscribers ORDER BY email) TO '{out}' (HEADER)")
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    print(json.dumps({"seconds": seconds, "rows": rows}))


def child_dlt(source: str, database: str, work: str) -> None:
    """In the child: what a generic loader does with the file, timed from reading it to loaded."""
    # dlt reads its settings from the environment; set before it is imported. Its working files
    # go under the run's folder (not ~/.dlt), and it sends no telemetry.
    os.environ.update({"DLT_DATA_DIR": f"{work}/dlt-data", "DLT_PROJECT_DIR": work,
                       "RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "ERROR"})
    import dlt
    import polars as pl

    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=f"{work}/dlt-pipelines",
                            destination=dlt.destinations.duckdb(database), dataset_name="bench")
    started = time.perf_counter()
    valid = (pl.scan_csv(source, infer_schema=False)
             .with_columns(pl.col("email").str.strip_chars().str.to_lowercase())
             .filter(pl.col("email").str.contains(EMAIL))
             .unique("email", keep="last", maintain_order=True)
             .collect())
    # Arrow tables in chunks: dlt writes them to Parquet as they are, with no Python row loop.
    chunks = (frame.to_arrow() for frame in valid.iter_slices(DLT_CHUNK))
    resource = dlt.resource(chunks, name="subscribers", write_disposition="merge",
                            primary_key="email")
    info = pipeline.run(resource)
    info.raise_on_failed_jobs()
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": valid.height}))


CHILDREN = {"import": child_import, "run-figures": child_run_figures, "duckdb-load": child_duckdb_load,
            "duckdb-copy": child_duckdb_copy, "dlt": child_dlt}


# --- the sides, as the parent measures them -------------------------------------------------------

def import_command(source: Path, home: Path) -> dict:
    """`mail-pipeline import FILE`: the whole process's seconds and peak memory, and its run's
    seconds and steps from the run record."""
    warm(source)
    run = measure([cli(), "import", source, "--list", LISTS[0], "--json"], env_for(home),
                  f"mail-pipeline import {source.name}")
    document = json.loads(run["stdout"])
    if document["state"] != "finished":
        raise ChildFailed(f"import {document['id']} {document['state']}: {document.get('error_message')}")
    figures = child("run-figures", document["id"], home=home)
    return {"seconds": figures["seconds"], "command_seconds": run["wall"], "peak_mb": run["peak_mb"],
            "stats": document["stats"], "stages": figures["stages"]}


def our_imports(base: Path, source: Path, home: Path) -> tuple[dict, dict]:
    """The timed import command into a store already holding the base, then the same again."""
    child("import", base, *LISTS, home=home)  # untimed: the store's starting content
    return import_command(source, home), import_command(source, home)


def exports(home: Path, work: Path) -> tuple[dict, dict]:
    """Our export command of the whole store, then DuckDB's COPY of the same table."""
    run = measure([cli(), "export", "--format", "csv", "--out", work / "export.csv", "--json"],
                  env_for(home), "mail-pipeline export")
    document = json.loads(run["stdout"])
    # The document's times are to the second: the in-run part is approximate at small sizes.
    in_run = (datetime.fromisoformat(document["finished_at"].replace("Z", "+00:00"))
              - datetime.fromisoformat(document["created_at"].replace("Z", "+00:00")))
    ours = {"seconds": run["wall"], "in_run_seconds": in_run.total_seconds(),
            "rows": document["rows"], "peak_mb": run["peak_mb"]}
    # Only now, with no import or export running, is the store opened by anything else.
    copy = child("duckdb-copy", home / "subscribers.duckdb", work / "copy.csv")
    return ours, copy


def dlt_load(base: Path, source: Path, work: Path) -> dict:
    database = work / "dlt.duckdb"
    child("dlt", base, database, work)  # untimed: the destination's starting content
    return child("dlt", source, database, work)


def fixed_cost(data: Path, runs: int) -> dict:
    """Medians of the 10-row command and of the trivial materialize, run alternately so that a
    busy moment of the machine weighs on both. The command runs in a home that has imported
    before (the usual case; the target is judged on it), each time a file it has not seen (so
    nothing is reused), and also in a fresh home, which first creates the Dagster instance's
    databases."""
    ours, fresh, trivial = [], [], []
    with tempfile.TemporaryDirectory(dir=data, prefix="fixed-") as tmp:
        home = Path(tmp) / "home"
        measure([cli(), "import", generate(10, 0, data / "import-10-from-0.csv"), "--list", LISTS[0]],
                env_for(home), "10-row import")  # untimed: the home's first import
        for run in range(runs):
            tiny = generate(10, 10 * (run + 1), data / f"import-10-from-{10 * (run + 1)}.csv")
            ours.append(measure([cli(), "import", tiny, "--list", LISTS[0]], env_for(home),
                                "10-row import")["wall"])
            fresh.append(measure([cli(), "import", tiny, "--list", LISTS[0]],
                                 env_for(Path(tmp) / f"fresh-{run}"), "10-row import")["wall"])
            trivial.append(measure([sys.executable, "-c", TRIVIAL], env_for(), "dg.materialize")["wall"])
    return {"ours": statistics.median(ours), "fresh": statistics.median(fresh),
            "trivial": statistics.median(trivial), "runs": runs}


# The reading commands of issue 18, on a home holding a few imports ({id}: the first one).
READING = (("imports",), ("imports", "show", "{id}"), ("imports", "logs", "{id}", "failed"),
           ("lists",), ("--help",), ("--version",))


def responsiveness(data: Path, runs: int) -> dict:
    """Medians, run alternately: each reading command and `python -c "import dagster"`; a 10-row
    `import --detach` (the run queued, not executed) and the same attached (executed)."""
    timed: dict[str, list] = {" ".join(c): [] for c in READING}
    timed.update({"import dagster": [], "detach": [], "attached": []})
    with tempfile.TemporaryDirectory(dir=data, prefix="cli-") as tmp:
        env = env_for(Path(tmp) / "home")
        for n in range(3):  # untimed: something to read
            measure([cli(), "import", generate(10, 10 * n, data / f"import-10-from-{10 * n}.csv"),
                     "--list", LISTS[0]], env, "10-row import")
        for run in range(runs):
            timed["import dagster"].append(measure([sys.executable, "-c", "import dagster"], env_for(),
                                                   "import dagster")["wall"])
            for command in READING:
                line = [part.format(id="1") for part in command]
                timed[" ".join(command)].append(measure([cli(), *line], env, " ".join(line))["wall"])
            for side, flags in (("detach", ["--detach"]), ("attached", [])):
                start = 1000 + 20 * run + (10 if flags else 0)
                tiny = generate(10, start, data / f"import-10-from-{start}.csv")
                timed[side].append(measure([cli(), "import", tiny, "--list", LISTS[0], *flags], env,
                                           f"10-row import {' '.join(flags)}")["wall"])
    return {side: statistics.median(values) for side, values in timed.items()}


def _stop_group(server: subprocess.Popen, seconds: float = 60) -> None:
    """Stop `mail-pipeline serve` as a service manager does (SIGTERM), then wait for everything
    it started (the daemon, run workers), which stops after it: until then they may still write
    in its home (once, a daemon recreated its schedules database after the home was removed)."""
    server.terminate()
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.killpg(server.pid, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            break
        server.poll()  # (reaped, the leader no longer counts)
        time.sleep(0.2)
    server.wait()


def queue_drain(data: Path, count: int) -> dict:
    """`count` 10-row imports queued with --detach, then drained by the daemon that
    `mail-pipeline serve` starts: between one run's end and the next one's start, the wait for
    the daemon's launch (its run-queue loop) and the run worker's start-up (a new process loads
    Dagster and the code location), from the runs' own records."""
    import socket
    tmp = Path(tempfile.mkdtemp(dir=data, prefix="queue-"))
    try:
        home = tmp / "home"
        env = env_for(home)
        for n in range(count):
            tiny = generate(10, 2000 + 10 * n, data / f"import-10-from-{2000 + 10 * n}.csv")
            measure([cli(), "import", tiny, "--list", LISTS[0], "--detach"], env, "10-row import --detach")
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        server = subprocess.Popen([cli(), "serve", "--port", str(port), "--daemon", "yes"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        started = time.perf_counter()
        try:
            runs = _drained(home, count, deadline=started + 60 + 30 * count)
        finally:
            _stop_group(server)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs.sort(key=lambda r: r["start"])
    waits = [b["launched"] - a["end"] for a, b in zip(runs, runs[1:])]
    startups = [r["start"] - r["launched"] for r in runs[1:]]
    gaps = [b["start"] - a["end"] for a, b in zip(runs, runs[1:])]
    return {"count": count, "drain": runs[-1]["end"] - runs[0]["start"],
            "run": statistics.median(r["end"] - r["start"] for r in runs),
            "wait": statistics.median(waits), "wait_max": max(waits),
            "startup": statistics.median(startups), "gap": statistics.median(gaps), "gap_max": max(gaps)}


def _drained(home: Path, count: int, deadline: float) -> list[dict]:
    """Once every queued import has finished: each run's launch, start and end times."""
    os.environ["MAIL_PIPELINE_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)
    from service import state
    while True:
        runs = state.records().runs("import_job")
        if len(runs) == count and all(r.is_finished for r in runs):
            break
        if time.perf_counter() > deadline:
            raise ChildFailed(f"the queue of {count} imports did not drain: "
                              f"{sum(r.is_finished for r in runs)} finished")
        time.sleep(1)
    if any(r.status != "SUCCESS" for r in runs):
        raise ChildFailed("a queued import failed: " + ", ".join(r.status for r in runs))
    return [{"launched": state.records().events(r.run_id, "RUN_STARTING")[0].timestamp,
             "start": r.start_time, "end": r.end_time} for r in runs]


def responsiveness_table(quick: dict | None, queue: dict | None) -> str:
    if not quick:
        return "Not measured (--fixed-runs 0).\n"
    reference = quick["import dagster"]
    rows = [["`python -c \"import dagster\"` (the reference)", f"{reference:.2f}", "1.00", "–"]]
    for command in READING:
        name = " ".join(command)
        value = quick[name]
        rows.append([f"`mail-pipeline {name.format(id='1')}`", f"{value:.2f}", f"{_ratio(value, reference):.2f}",
                     verdict(_ratio(value, reference), 1)])
    rows.append(["`mail-pipeline import FILE --detach` (10 rows, queued)", f"{quick['detach']:.2f}",
                 f"{_ratio(quick['detach'], quick['attached']):.2f} of the attached import",
                 verdict(_ratio(quick["detach"], quick["attached"]), 1)])
    rows.append(["`mail-pipeline import FILE` (10 rows, executed: the limit for --detach)",
                 f"{quick['attached']:.2f}", "–", "–"])
    text = md_table(["command", "seconds (median)", "ratio", "target ≤ 1"], rows)
    if queue:
        text += (f"\nA queue of {queue['count']} detached 10-row imports drained by the daemon of "
                 f"`mail-pipeline serve` in {queue['drain']:.1f} s (first start to last end), each "
                 f"run {queue['run']:.2f} s (median). Between one run's end and the next one's "
                 f"start: {queue['gap']:.2f} s median, {queue['gap_max']:.2f} s at most; of which "
                 f"the wait for the daemon's launch {queue['wait']:.2f} s median "
                 f"({queue['wait_max']:.2f} s at most; it looks at the queue every second) and the "
                 f"run worker's start-up (a new process loads Dagster and the code location) "
                 f"{queue['startup']:.2f} s.\n")
    return text


def median_run(runs: list[dict]) -> dict:
    """The round with the median time, its figures replaced by the medians over all rounds."""
    runs = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(runs[len(runs) // 2])
    for key, value in chosen.items():
        if isinstance(value, (int, float)):
            chosen[key] = statistics.median(r[key] for r in runs)
    return chosen


def measure_size(rows: int, data: Path, repeat: int, notes: list[str]) -> dict:
    """Every side at one size, `repeat` rounds; each side's median round."""
    base, source = files(rows, data)
    sides: dict[str, list] = {}
    for round_ in range(repeat):
        say(f"{rows:,} rows, round {round_ + 1} of {repeat}")
        with tempfile.TemporaryDirectory(dir=data, prefix="run-") as tmp:
            work = Path(tmp)
            measured = {"duckdb": child("duckdb-load", source, work / "reference.duckdb")}
            measured["ours"], measured["again"] = our_imports(base, source, work / "home")
            measured["export"], measured["copy"] = exports(work / "home", work)
            if dlt_usable(notes):
                try:
                    measured["dlt"] = dlt_load(base, source, work)
                except ChildFailed as failed:
                    # A baseline that cannot run is a note in the output, not a failed benchmark.
                    why = "; ".join(str(failed).splitlines())  # one line: it becomes a list item
                    notes.append(f"dlt baseline failed, skipped from here on: {why}")
        for side, figures in measured.items():
            sides.setdefault(side, []).append(figures)
        say(f"  ours {measured['ours']['seconds']:.2f} s, DuckDB {measured['duckdb']['seconds']:.2f} s")
    return {side: median_run(runs) for side, runs in sides.items()}


def dlt_usable(notes: list[str]) -> bool:
    """dlt is installed and has not failed earlier in this run (it would only fail again)."""
    return find_spec("dlt") is not None and not any(n.startswith("dlt baseline failed") for n in notes)


# --- the targets ----------------------------------------------------------------------------------

def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def target_rows(results: dict, fixed: dict | None) -> list[list[str]]:
    """Each target: what it compares, the measured value, the target, and whether it is met."""
    def at(rows, side, key="seconds"):
        return results[rows][side][key]

    # (name, sizes it needs, sides it needs, value, limit, unit)
    checks = [
        ("1. import command / DuckDB load, 10M rows", [TEN_M], ["ours"],
         lambda: _ratio(at(TEN_M, "ours", "command_seconds"), at(TEN_M, "duckdb")), 3, "×"),
        ("1. import command / Polars + dlt process, 10M rows", [TEN_M], ["dlt"],
         lambda: _ratio(at(TEN_M, "ours", "command_seconds"), at(TEN_M, "dlt", "command_seconds")),
         1, "×"),
        ("2. import command / DuckDB load, 1M rows", [M], ["ours"],
         lambda: _ratio(at(M, "ours", "command_seconds"), at(M, "duckdb")), 5, "×"),
        ("3. import peak memory, 10M rows", [TEN_M], ["ours"],
         lambda: at(TEN_M, "ours", "peak_mb"), PEAK_LIMIT, " MiB"),
        ("3. import peak memory, 10M / 1M", [M, TEN_M], ["ours"],
         lambda: _ratio(at(TEN_M, "ours", "peak_mb"), at(M, "ours", "peak_mb")), 2, "×"),
        ("4. 10-row command (home used before) / trivial dg.materialize", [], [],
         lambda: _ratio(fixed["ours"], fixed["trivial"]), 1.5, "×"),
        ("5. export command / DuckDB sorted COPY, 10M rows", [TEN_M], ["export"],
         lambda: _ratio(at(TEN_M, "export"), at(TEN_M, "copy")), 2, "×"),
        ("6. re-import run / first import run, same 1M file", [M], ["again"],
         lambda: _ratio(at(M, "again"), at(M, "ours")), 0.3, "×"),
    ]
    table = []
    for name, sizes, sides, value, limit, unit in checks:
        target = f"≤ {limit:g}{unit}"
        missing = [n for n in sizes if n not in results]
        if missing:
            needed = ",".join(str(n) for n in missing)
            table.append([name, f"not measured (needs --sizes to include {needed})", target, "–"])
        elif name.startswith("4.") and not fixed:
            table.append([name, "not measured (--fixed-runs 0)", target, "–"])
        elif any(side not in results[n] for n in sizes for side in sides):
            table.append([name, f"not measured (dlt not available: {BENCH_EXTRA})", target, "–"])
        else:
            measured = value()
            table.append([name, f"{measured:.2f}{unit}" if unit == "×" else f"{measured:.0f}{unit}",
                          target, verdict(measured, limit)])
    return table


def verdict(measured: float, limit: float) -> str:
    if measured <= limit:
        return f"met ({(1 - measured / limit) * 100:.0f}% below the limit)"
    return f"missed by {(measured / limit - 1) * 100:.0f}%"


# --- output ---------------------------------------------------------------------------------------

def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _s(figures: dict | None, key: str = "seconds", digits: int = 2) -> str:
    return "–" if figures is None else f"{figures[key]:.{digits}f}"


def sizes_table(results: dict) -> str:
    header = ["rows", "ours s", "ours command s", "DuckDB s", "command / DuckDB", "ours peak MiB",
              "DuckDB peak MiB", "rows/s (command)", "dlt command s", "command / dlt", "dlt peak MiB"]
    rows = []
    for n, r in results.items():
        ours, duck, dlt = r["ours"], r["duckdb"], r.get("dlt")
        rows.append([f"{n:,}", _s(ours), _s(ours, "command_seconds"), _s(duck),
                     f"{_ratio(ours['command_seconds'], duck['seconds']):.2f}", _s(ours, "peak_mb", 0),
                     _s(duck, "peak_mb", 0), f"{n / ours['command_seconds']:,.0f}",
                     _s(dlt, "command_seconds"),
                     "–" if dlt is None else f"{_ratio(ours['command_seconds'], dlt['command_seconds']):.2f}",
                     _s(dlt, "peak_mb", 0)])
    return md_table(header, rows)


def again_export_table(results: dict) -> str:
    header = ["rows", "re-import s", "re-import / first", "export command s",
              "export in run s (to the second)", "DuckDB COPY s", "export / COPY", "rows exported"]
    rows = []
    for n, r in results.items():
        rows.append([f"{n:,}", _s(r["again"]), f"{_ratio(r['again']['seconds'], r['ours']['seconds']):.2f}",
                     _s(r["export"]), _s(r["export"], "in_run_seconds", 0), _s(r["copy"]),
                     f"{_ratio(r['export']['seconds'], r['copy']['seconds']):.2f}",
                     f"{int(r['export']['rows']):,}"])
    return md_table(header, rows)


def stages_table(results: dict) -> str:
    stages = list(dict.fromkeys(s for r in results.values() for s in r["ours"]["stages"]))
    rows = []
    for n, r in results.items():
        outcome = ", ".join(f"{k} {v:,}" for k, v in r["ours"]["stats"]["subscribers"].items() if v)
        rows.append([f"{n:,}", *(r["ours"]["stages"].get(s, "–") for s in stages), outcome])
    return md_table(["rows", *stages, "outcome"], rows)


def fixed_line(fixed: dict | None) -> str:
    if not fixed:
        return "Fixed cost not measured (--fixed-runs 0).\n"
    return (f"Fixed cost (median of {fixed['runs']}, alternating): 10-row `mail-pipeline import` "
            f"{fixed['ours']:.2f} s from start to exit in a home that has imported before "
            f"({fixed['fresh']:.2f} s in a fresh home, which first creates the Dagster instance's "
            f"databases); `python -c` materialising one trivial asset with `dagster.materialize` "
            f"(an in-memory instance) {fixed['trivial']:.2f} s.\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                   if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        memory = f", {kib / 1024 ** 2:.0f} GiB memory"
    except (OSError, StopIteration):
        pass  # not Linux: the processor name is all there is
    versions = ", ".join(f"{name} {version(name)}" for name in ("dagster", "duckdb", "polars", "dlt"))
    return (f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; {versions}")


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (times, peaks) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side, key, label in (("ours", "command_seconds", "mail-pipeline import (command)"),
                             ("duckdb", "seconds", "DuckDB read_csv"),
                             ("dlt", "command_seconds", "Polars + dlt merge (process)")):
        sizes = [n for n, r in results.items() if side in r]
        if sizes:
            times.loglog(sizes, [results[n][side][key] for n in sizes], marker="o", label=label)
            peaks.loglog(sizes, [results[n][side]["peak_mb"] for n in sizes], marker="o", label=label)
    for axes, title in ((times, "time (s)"), (peaks, "peak memory (MiB)")):
        axes.set_xlabel("rows imported")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        # Plain numbers at 1, 2, 5 of each decade: a memory axis spanning less than a decade
        # otherwise gets one labelled tick, or reads "4 × 10²".
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_docs(results: dict, fixed: dict | None, tables: dict, notes: list[str]) -> None:
    DOCS.mkdir(exist_ok=True)
    has_plot = find_spec("matplotlib") is not None
    if has_plot:
        plot(results, DOCS / "benchmarks.png")
    command = shlex.join(["python", "bench/benchmark.py", *sys.argv[1:]])
    text = [
        "# Benchmarks\n",
        f"The performance targets of issue 15, measured on {date.today().isoformat()} by\n",
        f"```bash\n{command}\n```\n",
        (f"Regenerate with `{BENCH_EXTRA}` and then `python bench/benchmark.py` (all sizes; it "
         "rewrites this page and its plot). The method is in the script's docstring: every side "
         "runs in its own process, times are inside the process unless called command times, "
         "and every ratio is between figures of the same run.\n"),
        f"Machine: {machine()}.\n",
        "## Targets\n", tables["targets"], fixed_line(fixed), ANALYSIS.read_text(),
        "## The command line's reading commands, --detach and the run queue\n",
        ("Issue 18: each reading command, from start to exit, against `python -c \"import "
         "dagster\"` on the same machine; `--detach` against the attached 10-row import "
         "(medians of --fixed-runs, alternating).\n"),
        tables["commands"],
        "## Import, by size\n",
        ("A store holding the first N/2 subscribers imports the first N (half of them known). "
         "`ours s` is the import's run, start to end, from its run record; `ours command s` "
         "the whole `mail-pipeline import` process, start-up included; DuckDB is `CREATE TABLE "
         "AS SELECT * FROM read_csv(…, all_varchar = true)`; dlt is Polars validation plus a dlt "
         "merge on email into DuckDB; `dlt command s` its whole process.\n"),
        tables["sizes"],
        "## Re-import and export, by size\n",
        ("The same file imported again into the same store (nothing left to change), and "
         "`mail-pipeline export --format csv` of the whole store against DuckDB's `COPY "
         "(SELECT … FROM subscribers ORDER BY email) TO 'file.csv' (HEADER)` of the export's "
         "columns from the same store. The re-import is the run of the same command.\n"),
        tables["again"],
        "## Seconds per stage of our import\n",
        "From the run's own step events.\n",
        tables["stages"],
    ]
    if has_plot:
        text.append("## Plot\n\n![](benchmarks.png)\n")
    if notes:
        text.append("## Notes\n\n" + "".join(f"- {note}\n" for note in notes))
    (DOCS / "benchmarks.md").write_text("\n".join(text))


# --- main -----------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="rows imported, comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per size; medians are reported")
    ap.add_argument("--fixed-runs", type=int, default=5,
                    help="runs of each side of the fixed-cost comparison (0 skips it)")
    ap.add_argument("--queue", type=int, default=20,
                    help="detached imports drained by the daemon (0 skips it)")
    ap.add_argument("--data", default=str(ROOT / "bench-data"), help="where generated files go")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    if a.child:
        return CHILDREN[a.child[0]](*a.child[1:])

    sizes = sorted({int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip()})
    data = Path(a.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    notes = []
    if not find_spec("dlt"):
        notes.append(f"dlt is not installed: the generic-loader baseline is skipped ({BENCH_EXTRA}).")
    if not find_spec("matplotlib") and not a.no_write:
        notes.append(f"matplotlib is not installed: no plot ({BENCH_EXTRA}).")
    for note in notes:
        say(f"note: {note}")

    fixed = None
    if a.fixed_runs > 0:
        say(f"fixed cost: {a.fixed_runs} runs of each side")
        fixed = fixed_cost(data, a.fixed_runs)
        say("reading commands and --detach")
        quick = responsiveness(data, a.fixed_runs)
    else:
        quick = None
    queue = None
    if a.queue > 0:
        say(f"a queue of {a.queue} detached imports")
        queue = queue_drain(data, a.queue)
    try:
        results = {n: measure_size(n, data, a.repeat, notes) for n in sizes}
    except ChildFailed as failed:
        raise SystemExit(str(failed))  # the child's own error says why; our traceback would not

    tables = {"sizes": sizes_table(results), "again": again_export_table(results),
              "stages": stages_table(results),
              "targets": md_table(["what", "measured", "target", "result"],
                                  target_rows(results, fixed)),
              "commands": responsiveness_table(quick, queue)}
    print(tables["sizes"])
    print(tables["again"])
    print(tables["stages"])
    print(tables["targets"])
    print(fixed_line(fixed))
    print(tables["commands"])
    for note in notes:
        print(f"note: {note}")
    if not a.no_write:
        write_docs(results, fixed, tables, notes)
        say(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
