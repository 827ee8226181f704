"""Fault injection for imports (issue 7): kill an import at random points, fill its disk, hold
the store's lock, and check that each resumed import ends exactly as an uninterrupted one.

Importable without pytest. Each entry point takes sizes, counts and a seed, prints its progress
on stderr and returns a dict of figures that says what it measured:

    kill_and_resume(workdir, rows, kills, seed, base_rows)  SIGKILL at `kills` random times
                                   (or at named stages), resume each, compare
    full_disk(workdir, rows)       the home on a small tmpfs, filled while staging, validating and
                                   merging: one-sentence failure, consistent store, resume once freed
    lock_held(workdir, rows)       another process holds the DuckDB file (writing, or read-only):
                                   the import says it waits, then finishes

`python tests/faults.py kill|disk|lock WORKDIR [ROWS [KILLS]]` runs one and prints its figures.
Needs ../shared/bench/make_subscribers.py beside the project, and root for the tmpfs (else
`full_disk` returns {"skipped": reason}).

Every trial starts from the same pre-populated home (a template: `base_rows` subscribers on the
list `news`, a few of them blocklisted) and imports a file that overlaps it by half with
`overwrite` on, so rows are added, updated, skipped as blocklisted, failed and skipped as
duplicates. The reference is the same import run once without interruption in its own copy of
the template. Comparing a trial with the reference:

- the store: `subscribers`, `subscriptions` and `lists`, every column. `created_at` and
  `updated_at` come from the clock, so a time at or after the import's start counts as "set by
  this import" and is compared as such; older times (the template's) are compared exactly.
  `import_batches` may be cut differently by a resume (batches are renumbered from the last
  committed row), so only the rows they cover are compared.
- the logs: every category file byte for byte, `stats.json`, and the log's closing line.
- rows lost: reference subscribers and subscriptions missing from the trial's store, plus lines
  of the reference's category logs missing from the trial's (as multisets).
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import duckdb

ROOT = Path(__file__).resolve().parents[1]
MAKE = ROOT.parent / "shared" / "bench" / "make_subscribers.py"
LIST = "news"


def say(text: str) -> None:
    print(f"[faults] {text}", file=sys.stderr, flush=True)


# --- running the command line --------------------------------------------------------------

def env_of(home: Path) -> dict:
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    return env


def cli(home: Path, *args, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)],
                          env=env_of(home), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def start(home: Path, *args) -> subprocess.Popen:
    """`mail-pipeline ARGS` in its own process group (so a kill reaches all of it)."""
    return subprocess.Popen([sys.executable, "-m", "service.cli", *map(str, args)],
                            env=env_of(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True)


def show(home: Path, import_id: str) -> Optional[dict]:
    result = cli(home, "imports", "show", import_id, "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


# --- the data and the pre-populated home ---------------------------------------------------

@dataclass(frozen=True)
class Setup:
    root: Path
    source: Path      # the file every trial imports
    params: Path      # its options (lists, batch_size, overwrite, a tag)
    template: Path    # the home every trial starts from
    import_id: str    # the id the import gets in a copy of the template
    rows: int
    base_rows: int
    batch_size: int

    def command(self) -> list:
        return ["import", self.source, "--params", self.params, "--json"]

    def fresh_home(self, path: Path) -> Path:
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(self.template, path, symlinks=True)
        return path


def _make(rows: int, start_at: int, seed: int, out: Path, clean: bool = False) -> None:
    subprocess.run([sys.executable, str(MAKE), "--rows", str(rows), "--start", str(start_at),
                    "--seed", str(seed), "--out", str(out), *(["--clean"] if clean else [])],
                   check=True)


def prepare(workdir: Path, rows: int, base_rows: int, seed: int = 7,
            batch_size: Optional[int] = None) -> Setup:
    """The files and the template home, made once per (rows, base_rows, seed, batch_size) under
    `workdir` and reused by later calls."""
    batch_size = batch_size or max(100, rows // 50)  # about 50 batches
    root = Path(workdir) / f"setup-{rows}-{base_rows}-{seed}-{batch_size}"
    setup = Setup(root, root / "subscribers.csv", root / "params.json", root / "template",
                  "3", rows, base_rows, batch_size)
    if (root / "ready").exists():
        return setup
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    say(f"preparing {rows} rows over a store of {base_rows} subscribers in {root}")
    _make(base_rows, 0, seed, root / "base.csv")
    blocked = max(1, base_rows // 20)
    _make(blocked, base_rows - blocked, seed + 2, root / "blocklist.csv", clean=True)
    # Half of the file is already in the store (updated, or skipped when blocklisted); the
    # other half is new. Another seed, so the overlapping rows bring other attributes.
    _make(rows, base_rows // 2, seed + 1, setup.source)
    setup.params.write_text(json.dumps({"lists": [LIST], "batch_size": batch_size,
                                        "overwrite": True, "tags": ["fault-injection"]}))
    for args in (["import", root / "base.csv", "--list", LIST, "--json"],
                 ["import", root / "blocklist.csv", "--mode", "blocklist", "--json"]):
        result = cli(setup.template, *args)
        if result.returncode != 0:
            raise RuntimeError(f"preparing the template failed: {result.stderr.strip()}")
    # The validation cache would let trials skip their validated stage: each trial validates.
    shutil.rmtree(setup.template / "cache", ignore_errors=True)
    (root / "ready").touch()
    return setup


@dataclass(frozen=True)
class Result:
    """One finished import in its own home: what the comparison needs."""
    home: Path
    import_id: str
    since: datetime   # the import's start: store times at or after it were set by the import


def reference(setup: Setup) -> tuple[Result, float]:
    """The uninterrupted import (made once per setup in this process), and how long its
    command took."""
    home = setup.root / "reference"
    if setup.root in _REFERENCES:
        return _REFERENCES[setup.root]
    setup.fresh_home(home)
    since = datetime.now(timezone.utc)
    began = time.monotonic()
    result = cli(home, *setup.command())
    seconds = time.monotonic() - began
    if result.returncode != 0:
        raise RuntimeError(f"the reference import failed: {result.stderr.strip()}")
    document = json.loads(result.stdout)
    assert document["id"] == setup.import_id, document["id"]
    say(f"reference import: {seconds:.1f} s, {document['stats']['subscribers']}")
    _REFERENCES[setup.root] = Result(home, document["id"], since), seconds
    return _REFERENCES[setup.root]


# References are kept for this process only: made by the code under test, never by an older one.
_REFERENCES: dict = {}


# --- comparing a home with the reference ---------------------------------------------------

def _when(column: str, side: str) -> str:
    """A store time as compared: exact when it predates the import, else 'set by the import'."""
    return (f"CASE WHEN {column} >= ${side}_since THEN 'set by the import'"
            f" ELSE CAST({column} AS VARCHAR) END")


def _tables(side: str) -> dict[str, str]:
    return {
        "subscribers": f"SELECT email, name, status, CAST(attributes AS VARCHAR) AS attributes,"
                       f" CAST(tags AS VARCHAR) AS tags, email_format,"
                       f" {_when('created_at', side)} AS created_at,"
                       f" {_when('updated_at', side)} AS updated_at FROM {side}.subscribers",
        "subscriptions": f"SELECT email, list, status, {_when('created_at', side)} AS created_at,"
                         f" {_when('updated_at', side)} AS updated_at, subscribe_time,"
                         f" subscribe_ip, confirm_time, remove_time, remove_ip"
                         f" FROM {side}.subscriptions",
        "lists": f"SELECT name, {_when('created_at', side)} AS created_at FROM {side}.lists",
    }


def _store_differences(ref: Result, trial: Result) -> tuple[dict, int, int]:
    """Per table: rows of the reference missing from the trial and rows only the trial has;
    and the reference's subscribers and subscriptions absent from the trial (lost)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{ref.home / 'subscribers.duckdb'}' AS ref (READ_ONLY)")
        con.execute(f"ATTACH '{trial.home / 'subscribers.duckdb'}' AS trial (READ_ONLY)")
        params = {"ref_since": ref.since, "trial_since": trial.since}
        figures = {}
        for table, ref_sql in _tables("ref").items():
            trial_sql = _tables("trial")[table]
            [(missing,)] = con.execute(f"SELECT count(*) FROM ({ref_sql} EXCEPT ALL {trial_sql})",
                                       params).fetchall()
            [(extra,)] = con.execute(f"SELECT count(*) FROM ({trial_sql} EXCEPT ALL {ref_sql})",
                                     params).fetchall()
            figures[table] = {"missing": missing, "extra": extra}
        [(lost_subscribers,)] = con.execute(
            "SELECT count(*) FROM (SELECT email FROM ref.subscribers EXCEPT ALL"
            " SELECT email FROM trial.subscribers)").fetchall()
        [(lost_subscriptions,)] = con.execute(
            "SELECT count(*) FROM (SELECT email, list FROM ref.subscriptions EXCEPT ALL"
            " SELECT email, list FROM trial.subscriptions)").fetchall()
        # Batches may be cut differently after a resume; together they cover the same rows once.
        batches = {}
        for side, result in (("ref", ref), ("trial", trial)):
            [(count, rows, distinct)] = con.execute(
                f"SELECT count(*), coalesce(sum(rows), 0), count(DISTINCT batch)"
                f" FROM {side}.import_batches WHERE import_id = ?", [result.import_id]).fetchall()
            [(overlaps,)] = con.execute(
                f"SELECT count(*) FROM {side}.import_batches a JOIN {side}.import_batches b"
                f" ON a.import_id = b.import_id AND a.batch < b.batch AND a.last_row >= b.first_row"
                f" WHERE a.import_id = ?", [result.import_id]).fetchall()
            batches[side] = {"batches": count, "rows": rows, "repeated": count - distinct,
                             "overlapping": overlaps}
        if (batches["ref"]["rows"] != batches["trial"]["rows"] or batches["trial"]["repeated"]
                or batches["trial"]["overlapping"]):
            figures["import_batches"] = batches
        return figures, lost_subscribers, lost_subscriptions
    finally:
        con.close()


def _digest(path: Path) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _lines(path: Path) -> Counter:
    return Counter(path.read_bytes().splitlines()) if path.exists() else Counter()


def _closing_line(folder: Path) -> Optional[str]:
    log = folder / "logs" / "log.txt"
    if not log.exists():
        return None
    lines = log.read_text(encoding="utf-8").splitlines()
    return lines[-1].split(" ", 2)[-1] if lines else None  # without the date and time


def _log_differences(ref: Result, trial: Result) -> tuple[dict, int]:
    """Category logs that differ (lines missing and extra), stats and the closing log line;
    and the reference's log lines missing from the trial."""
    a = ref.home / "imports" / ref.import_id
    b = trial.home / "imports" / trial.import_id
    # A comparison of nothing must not pass: the reference has its stats and category logs.
    assert (a / "stats.json").exists() and any(p.name != "log.txt" for p in (a / "logs").glob("*")), a
    figures, lost = {}, 0
    names = {p.name for p in (a / "logs").glob("*")} | {p.name for p in (b / "logs").glob("*")}
    for name in sorted(names - {"log.txt"}):
        if name.endswith(".partial"):
            figures[name] = "left behind"
            continue
        if (a / "logs" / name).exists() != (b / "logs" / name).exists():
            absent = "trial" if (a / "logs" / name).exists() else "reference"
            figures[name] = f"absent in the {absent}"
            lost += sum(_lines(a / "logs" / name).values())
        elif _digest(a / "logs" / name) != _digest(b / "logs" / name):
            left, right = _lines(a / "logs" / name), _lines(b / "logs" / name)
            missing, extra = sum((left - right).values()), sum((right - left).values())
            figures[name] = {"missing": missing, "extra": extra,
                             "order": "differs" if not missing and not extra else None}
            lost += missing
    for name in ("stats.json",):
        if _digest(a / name) != _digest(b / name):
            figures[name] = "differs"
    if _closing_line(a) != _closing_line(b):
        figures["log.txt"] = {"reference": _closing_line(a), "trial": _closing_line(b)}
    return figures, lost


def compare(ref: Result, trial: Result) -> dict:
    """How the trial's store and logs differ from the reference's (empty `differences`: none)."""
    store, lost_subscribers, lost_subscriptions = _store_differences(ref, trial)
    logs, lost_lines = _log_differences(ref, trial)
    differences = {f"store.{table}": f for table, f in store.items()
                   if not isinstance(f, dict) or f.get("missing") or f.get("extra")
                   or table == "import_batches"}
    differences.update({f"logs.{name}": f for name, f in logs.items()})
    return {"identical": not differences, "differences": differences,
            "rows_lost": lost_subscribers + lost_subscriptions + lost_lines,
            "lost": {"subscribers": lost_subscribers, "subscriptions": lost_subscriptions,
                     "log_lines": lost_lines}}


# --- what a killed import had done -----------------------------------------------------------

def stage_of(home: Path, import_id: str) -> dict:
    """Where the import was, from what it left on disk (read after the kill, so it is exact)."""
    folder = home / "imports" / import_id
    if not folder.is_dir():
        return {"stage": "starting"}  # the import was not created yet
    if not (folder / "import.json").exists():
        return {"stage": "created"}   # created; its run not started, or not done staging
    if not (folder / "validation.json").exists():
        return {"stage": "validating", "parts": len(list((folder / "valid").glob("part-*.parquet")))}
    progress = _read_json(folder / "progress.json")
    if not progress and _says_waiting(folder):
        return {"stage": "waiting for the store"}
    if (folder / "stats.json").exists():
        return {"stage": "finishing"}  # logs written, the run being closed
    if progress and progress["batch"] >= progress["batches"]:
        return {"stage": "logs", "batch": progress["batch"], "batches": progress["batches"]}
    if progress:
        return {"stage": "merging", "batch": progress["batch"], "batches": progress["batches"]}
    return {"stage": "classifying"}  # validated; the merge classifying or its first batch


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def committed_batches(home: Path, import_id: str):
    """The import's committed batches in the store (or why it cannot be read)."""
    try:
        con = duckdb.connect(str(home / "subscribers.duckdb"), read_only=True)
    except duckdb.Error as exc:
        return f"store unreadable: {exc}"
    try:
        return con.execute("SELECT count(*) FROM import_batches WHERE import_id = ?",
                           [import_id]).fetchall()[0][0]
    finally:
        con.close()


def recover(home: Path, setup: Setup, import_id: str, attempts: int = 3) -> tuple[list, Optional[dict]]:
    """What a user does after the crash: resume the import until it is finished (run it again
    if it was never created). Returns the steps taken and the final document."""
    steps, document = [], None
    for _ in range(attempts):
        result = cli(home, "imports", "resume", import_id, "--json")
        error = result.stderr.strip().splitlines()[-1] if result.returncode else None
        if result.stdout.strip():
            document = json.loads(result.stdout)
        if error and ("not found" in error or "import the file again" in error):
            # Killed before the import existed, or before it held its options: the command
            # never printed an id, so the user runs it again (and it gets the next id).
            result = cli(home, *setup.command())
            error = result.stderr.strip().splitlines()[-1] if result.returncode else None
            steps.append({"action": "import again", "exit": result.returncode, "error": error})
            document = json.loads(result.stdout) if result.stdout.strip() else None
            import_id = document["id"] if document else import_id
        elif error and "is finished" in error:  # it had finished before the kill
            steps.append({"action": "none (finished)", "exit": 0, "error": None})
            document = show(home, import_id)
        else:
            steps.append({"action": "resume", "exit": result.returncode, "error": error})
        if document is not None and document["state"] == "finished":
            break
    return steps, document


# --- 1. SIGKILL at random points ---------------------------------------------------------------

STAGES = ("starting", "created", "staging", "validating", "classifying", "merging", "logs",
          "finishing")


def _kill_when(proc: subprocess.Popen, home: Path, import_id: str, at: Optional[float],
               stage: Optional[str], fraction: float) -> bool:
    """SIGKILL the import `at` seconds after its start, or as soon as it is in `stage` (for
    "merging": once `fraction` of its batches are committed; a stage it went past is killed
    at once). False when it finished first."""
    began = time.monotonic()
    while proc.poll() is None:
        if at is not None and time.monotonic() - began >= at:
            break
        if stage is not None:
            now = stage_of(home, import_id)
            reached = STAGES.index(now["stage"]) - STAGES.index(stage)
            if reached > 0 or (reached == 0 and (stage != "merging"
                                                 or now["batch"] >= fraction * now["batches"])):
                break
        time.sleep(0.002)
    else:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    return True


def kill_and_resume(workdir, rows: int = 30_000, kills: int = 3, seed: int = 7,
                    base_rows: Optional[int] = None, batch_size: Optional[int] = None,
                    stages: Optional[list[str]] = None, keep: bool = False) -> dict:
    """Kill the import (SIGKILL) `kills` times, resume each, and compare store and logs with the
    reference. Kills are spread over the import's whole duration: one at a seeded random time in
    each of `kills` equal slices of the reference's duration. With `stages` (names of STAGES),
    trial k is killed instead once the import reaches stages[k % len(stages)] (a seeded random
    point of the merge's batches for "merging"), which a loaded machine cannot shift."""
    began = time.monotonic()
    workdir = Path(workdir)
    setup = prepare(workdir, rows, base_rows if base_rows is not None else rows // 2, seed, batch_size)
    ref, duration = reference(setup)
    rnd = random.Random(seed)
    trials = []
    for k in range(kills):
        at = None if stages else (k + rnd.random()) / kills * duration
        target = stages[k % len(stages)] if stages else None
        fraction = rnd.random()
        for attempt in range(3):
            home = setup.fresh_home(workdir / f"trial-{k}")
            t0 = time.monotonic()
            since = datetime.now(timezone.utc)
            proc = start(home, *setup.command())
            killed_it = _kill_when(proc, home, setup.import_id, at, target, fraction)
            killed_after = time.monotonic() - t0
            proc.communicate()
            if killed_it or at is None or attempt == 2:
                break
            # It finished first (the machine got quicker than when the reference was timed):
            # the same point of this run, which just showed how long a whole one takes now.
            say(f"kill {k + 1}/{kills}: finished in {killed_after:.2f} s, before {at:.2f} s; again")
            at = at / duration * killed_after * 0.95
            shutil.rmtree(home, ignore_errors=True)
        killed = stage_of(home, setup.import_id) if killed_it else {"stage": "finished before the kill"}
        batches = committed_batches(home, setup.import_id)
        steps, document = recover(home, setup, setup.import_id)
        import_id = document["id"] if document else setup.import_id
        figures = compare(ref, Result(home, import_id, since))
        trial = {"trial": k + 1, "aimed_at": round(at, 3) if at is not None else target,
                 "kill_at": round(killed_after, 3), "at_fraction": round(killed_after / duration, 3),
                 "killed_in": killed, "committed_batches_at_kill": batches, "recovery": steps,
                 "state": document and document["state"],
                 "seconds": round(time.monotonic() - t0, 2), **figures}
        trial["identical"] = figures["identical"] and trial["state"] == "finished"
        trials.append(trial)
        say(f"kill {k + 1}/{kills} at {killed_after:.2f} s ({killed}, {batches} batches committed): "
            f"{'identical' if trial['identical'] else 'DIFFERENT ' + json.dumps(figures['differences'])[:400]}, "
            f"{figures['rows_lost']} rows lost, recovery {[s['action'] for s in steps]}")
        if trial["identical"] and not keep:
            shutil.rmtree(home, ignore_errors=True)
    return {"test": "kill_and_resume", "rows": rows, "base_rows": setup.base_rows,
            "batch_size": setup.batch_size, "kills": kills, "seed": seed,
            "reference_seconds": round(duration, 2), "trials": trials,
            "identical": sum(t["identical"] for t in trials),
            "rows_lost": sum(t["rows_lost"] for t in trials),
            "stages": dict(Counter(t["killed_in"]["stage"] for t in trials)),
            "seconds": round(time.monotonic() - began, 1)}


# --- 2. a full disk ----------------------------------------------------------------------------

def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def consistent(home: Path, template: Path, import_id: str) -> dict:
    """Whether the store holds exactly the import's committed batches: every subscriber it added
    or changed belongs to a committed batch's outcomes, and every new subscriber those outcomes
    name is there (no half batch)."""
    folder = home / "imports" / import_id / "outcomes"
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{template / 'subscribers.duckdb'}' AS before (READ_ONLY)")
        try:
            con.execute(f"ATTACH '{home / 'subscribers.duckdb'}' AS now (READ_ONLY)")
        except duckdb.Error as exc:
            return {"consistent": False, "error": f"the store cannot be opened: {exc}"}
        committed = [b for (b,) in con.execute(
            "SELECT batch FROM now.import_batches WHERE import_id = ? ORDER BY batch",
            [import_id]).fetchall()]
        files = [folder / f"batch-{b:06d}.parquet" for b in committed]
        absent = [f.name for f in files if not f.exists()]
        present = [str(f) for f in files if f.exists()]
        outcomes = (f"(SELECT * FROM read_parquet({present!r}))" if present
                    else "(SELECT NULL::VARCHAR AS email, NULL::VARCHAR AS category WHERE false)")
        [(added_new,)] = con.execute(
            f"SELECT count(*) FROM {outcomes} o WHERE o.category = 'added'"
            " AND o.email NOT IN (SELECT email FROM before.subscribers)").fetchall()
        [(new,)] = con.execute("SELECT count(*) FROM now.subscribers WHERE email NOT IN"
                               " (SELECT email FROM before.subscribers)").fetchall()
        [(stray,)] = con.execute(
            "SELECT count(*) FROM (SELECT * FROM now.subscribers EXCEPT SELECT * FROM before.subscribers) s"
            f" WHERE s.email NOT IN (SELECT email FROM {outcomes} o"
            " WHERE o.category IN ('added', 'updated'))").fetchall()
        return {"consistent": not absent and new == added_new and not stray,
                "committed_batches": len(committed), "outcome_files_missing": absent,
                "new_subscribers": new, "added_in_committed_outcomes": added_new,
                "changed_outside_committed_batches": stray}
    finally:
        con.close()


def _size_of(path: Path) -> int:
    return _size(path) if path.is_dir() else path.stat().st_size if path.exists() else 0


def _mount(path: Path, size: int) -> Optional[str]:
    """Mount a tmpfs of `size` bytes at `path`; the reason when it cannot be done."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024 + 1}k", "tmpfs",
                             str(path)], capture_output=True, text=True)
    return None if result.returncode == 0 else f"mount failed: {result.stderr.strip()}"


def _resize(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size // 1024 + 1}k", str(path)], check=True)


def _one_sentence(stderr: str) -> dict:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return {"error": lines[-1] if lines else None, "stderr_lines": len(lines),
            "traceback": "Traceback" in stderr}


def full_disk(workdir, rows: int = 30_000, seed: int = 7, base_rows: Optional[int] = None,
              stages: tuple = ("staging", "validating", "merging"),
              batch_size: Optional[int] = None) -> dict:
    """The home on a tmpfs too small for the import, once per stage in `stages` (of staging,
    validating, merging, logs): the disk holds the template, what the reference import wrote in
    the stages before, and half of what it wrote in that one (roughly: Dagster's event log and
    DuckDB's write-ahead log grow throughout, so `failed_in` says where it did fail). The import must fail with one sentence (no traceback), the store hold
    exactly its committed batches, and once the disk is enlarged `imports resume` must finish
    with the reference's result."""
    began = time.monotonic()
    workdir = Path(workdir)
    setup = prepare(workdir, rows, base_rows if base_rows is not None else rows // 2, seed, batch_size)
    ref, _ = reference(setup)
    template, grown = _size(setup.template), _size(ref.home) - _size(setup.template)
    folder = ref.home / "imports" / ref.import_id
    staged = _size_of(folder / "source.csv")
    validated = sum(_size_of(folder / name) for name in ("valid", "failed", "duplicates.parquet"))
    # (What the merge writes, the store's growth, and what grows all along, Dagster's event
    # log, are not told apart: a third of the rest fills the disk between batches, at 20k rows
    # as at 1M.)
    room = {"staging": staged // 2, "validating": staged + validated // 2,
            "merging": staged + validated + (grown - staged - validated) // 3,
            "logs": grown - _size_of(folder / "logs") // 2}
    cases = []
    for stage in stages:
        disk = workdir / f"full-disk-{stage}"
        size = template + room[stage]
        why = _mount(disk, size)
        if why:
            say(f"full disk: skipped ({why})")
            return {"test": "full_disk", "skipped": why}
        try:
            home = setup.fresh_home(disk / "home")
            since = datetime.now(timezone.utc)
            t0 = time.monotonic()
            result = cli(home, *setup.command())
            case = {"aimed_at": stage, "disk_bytes": size, "free_bytes": room[stage],
                    "exit": result.returncode, "seconds": round(time.monotonic() - t0, 2),
                    **_one_sentence(result.stderr), "failed_in": stage_of(home, setup.import_id),
                    "committed_batches_at_failure": committed_batches(home, setup.import_id)}
            case["store_at_failure"] = consistent(home, setup.template, setup.import_id)
            _resize(disk, (template + grown) * 3)
            steps, document = recover(home, setup, setup.import_id)
            case.update({"recovery": steps, "state": document and document["state"],
                         **compare(ref, Result(home, setup.import_id, since))})
            case["identical"] = case["identical"] and case["state"] == "finished"
            case["clear_failure"] = (result.returncode == 1 and not case["traceback"]
                                     and case["stderr_lines"] == 1)
            case["passed"] = (case["identical"] and case["clear_failure"]
                              and case["store_at_failure"]["consistent"])
            say(f"full disk ({room[stage] / 1e6:.1f} MB free): exit {result.returncode}, "
                f"failed in {case['failed_in']}, {case['error']!r}; store consistent "
                f"{case['store_at_failure']['consistent']}; after resume "
                f"{'identical' if case['identical'] else 'DIFFERENT ' + json.dumps(case['differences'])[:300]}")
            cases.append(case)
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    return {"test": "full_disk", "rows": rows, "cases": cases,
            "passed": sum(c["passed"] for c in cases), "rows_lost": sum(c["rows_lost"] for c in cases),
            "seconds": round(time.monotonic() - began, 1)}


# --- 3. the store's lock held by another process ------------------------------------------------

_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
print("holding", flush=True)
time.sleep(3600)
"""


def _says_waiting(folder: Path) -> bool:
    log = folder / "logs" / "log.txt"
    return log.exists() and "waiting for" in log.read_text(encoding="utf-8")


def lock_held(workdir, rows: int = 30_000, seed: int = 7, base_rows: Optional[int] = None,
              hold_seconds: float = 3.0, modes: tuple = ("write", "read"),
              batch_size: Optional[int] = None, patience: float = 300.0) -> dict:
    """Another process holds the DuckDB file (opened for writing, or read-only, as the `duckdb`
    shell or a notebook would) until `hold_seconds` after the import says it is waiting for it
    (at most `patience` seconds). The import must wait and say so, then finish with the
    reference's result once the other process lets go."""
    began = time.monotonic()
    workdir = Path(workdir)
    setup = prepare(workdir, rows, base_rows if base_rows is not None else rows // 2, seed, batch_size)
    ref, _ = reference(setup)
    cases = []
    for mode in modes:
        home = setup.fresh_home(workdir / f"lock-{mode}")
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(home / "subscribers.duckdb"), mode],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "holding"
            since = datetime.now(timezone.utc)
            t0 = time.monotonic()
            proc = start(home, *setup.command())
            folder = home / "imports" / setup.import_id
            said_waiting = None
            while proc.poll() is None and time.monotonic() - t0 < patience:
                if said_waiting is None and _says_waiting(folder):
                    said_waiting = round(time.monotonic() - t0, 2)
                    stage = stage_of(home, setup.import_id)
                if said_waiting is not None and time.monotonic() - t0 >= said_waiting + hold_seconds:
                    break
                time.sleep(0.05)
            ended_while_held = proc.poll() is not None
            if said_waiting is None:
                stage = stage_of(home, setup.import_id)
        finally:
            holder.kill()
            holder.wait()
        released = time.monotonic()
        out, err = proc.communicate(timeout=1800)
        case = {"mode": mode, "held_after_it_said_waiting": hold_seconds, "exit": proc.returncode,
                "ended_while_held": ended_while_held, "stage_while_held": stage,
                "said_waiting_after": said_waiting,
                "finished_after_release": round(time.monotonic() - released, 2),
                **_one_sentence(err if proc.returncode else "")}
        steps, document = [], json.loads(out) if out.strip() else None
        if proc.returncode != 0:  # it gave up: it must say why, and resume now
            steps, document = recover(home, setup, setup.import_id)
        case.update({"recovery": steps, "state": document and document["state"],
                     **compare(ref, Result(home, setup.import_id, since))})
        case["identical"] = case["identical"] and case["state"] == "finished"
        case["passed"] = case["identical"] and (
            (proc.returncode == 0 and said_waiting is not None)
            or (proc.returncode != 0 and not case["traceback"]))
        say(f"store held ({mode}): exit {proc.returncode}, said waiting after "
            f"{said_waiting} s, finished {case['finished_after_release']} s after the release; "
            f"{'identical' if case['identical'] else 'DIFFERENT ' + json.dumps(case['differences'])[:300]}")
        cases.append(case)
        if case["passed"]:
            shutil.rmtree(home, ignore_errors=True)
    return {"test": "lock_held", "rows": rows, "cases": cases,
            "passed": sum(c["passed"] for c in cases), "rows_lost": sum(c["rows_lost"] for c in cases),
            "seconds": round(time.monotonic() - began, 1)}


def main() -> None:
    """python tests/faults.py kill|disk|lock WORKDIR [ROWS [KILLS]]: one run, figures as JSON."""
    what, workdir = sys.argv[1], Path(sys.argv[2])
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 30_000
    if what == "kill":
        figures = kill_and_resume(workdir, rows, int(sys.argv[4]) if len(sys.argv) > 4 else 3)
    elif what == "disk":
        figures = full_disk(workdir, rows)
    else:
        figures = lock_held(workdir, rows)
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
