"""Reliability run (issue 7): the hostile-input corpus, the fault injections and the load run at
full size, written up as docs/reliability.md.

    python bench/reliability.py                 # the full run; rewrites docs/reliability.md
    python bench/reliability.py --quick         # CI sizes, prints only (the tests run these too)

Each part is the harness the tests use (tests/hostile.py, tests/faults.py, tests/load.py), at the
sizes the issue names:
  - every case of the hostile corpus, as a user runs it;
  - SIGKILL at 20 seeded random points of a 1,000,000-row import into a store of 500,000, each
    resumed and compared with the uninterrupted import (store and logs);
  - the home on a tmpfs that fills during staging, validation and the merge: one sentence, then
    a resume once the disk is enlarged, compared the same way;
  - the store's file held by another process (writing, and reading): the import waits, says so,
    and finishes with the same result;
  - 20 imports queued at once (detached) plus exports while the daemon runs, compared with the
    same imports run one by one in queue order.
It takes about 25 minutes at full size on 2 cores (half of it the 20 kills); `--only PART`
re-runs one part and keeps the others' figures from docs/reliability.json.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import faults, hostile, load  # noqa: E402  (the harnesses live with the tests)

DOC = ROOT / "docs" / "reliability.md"
FIGURES = DOC.with_suffix(".json")
FULL = {"rows": 1_000_000, "kills": 20, "disk_rows": 1_000_000, "lock_rows": 1_000_000,
        "imports": 20, "import_rows": 50_000, "exports": 3}
QUICK = {"rows": 30_000, "kills": 3, "disk_rows": 30_000, "lock_rows": 30_000,
         "imports": 20, "import_rows": 300, "exports": 2}


def say(text: str) -> None:
    print(f"[reliability {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def run_corpus(workdir: Path) -> list[dict]:
    cases = hostile.cases()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda case: hostile.run(case, workdir / case.name), cases))
    for result in results:
        say(f"corpus {result['case']}: {'ok' if not result['problems'] else result['problems']}")
    return results


PARTS = ("corpus", "kills", "disk", "lock", "load")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI sizes; implies --no-write")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--only", default=",".join(PARTS),
                    help="comma-separated parts to run; the others keep their figures from the "
                         "last run (docs/reliability.json)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    parts = [part for part in PARTS if part in args.only.split(",")]
    write = not (args.quick or args.no_write)
    figures: dict = {}
    if write and set(parts) != set(PARTS) and FIGURES.exists():
        figures = json.loads(FIGURES.read_text())  # a partial run refreshes its parts only
    figures.update({"sizes": sizes, "seed": args.seed})
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        for part in parts:
            began = time.monotonic()
            try:
                figures[part] = RUNS[part](Path(tmp) / part, sizes, args.seed)
            except Exception as exc:  # the other parts' figures must survive one part's crash
                say(f"{part} crashed: {exc!r}")
                figures[part] = {"error": repr(exc)}
            figures.setdefault("part_seconds", {})[part] = round(time.monotonic() - began)
            if write:
                FIGURES.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    figures["seconds"] = sum(figures.get("part_seconds", {}).values())
    text = render(figures)
    print(text)
    failures = problems(figures)
    for failure in failures:
        say(f"FAILED: {failure}")
    if write:
        DOC.write_text(text)
        FIGURES.write_text(json.dumps(figures, indent=1, default=str) + "\n")
        say(f"wrote {DOC.relative_to(ROOT)} and its figures ({FIGURES.name})")
    return 1 if failures else 0


RUNS = {
    "corpus": lambda work, sizes, seed: run_corpus(work),
    "kills": lambda work, sizes, seed: faults.kill_and_resume(
        work, rows=sizes["rows"], kills=sizes["kills"], seed=seed),
    "disk": lambda work, sizes, seed: faults.full_disk(work, rows=sizes["disk_rows"], seed=seed),
    "lock": lambda work, sizes, seed: faults.lock_held(work, rows=sizes["lock_rows"], seed=seed),
    "load": lambda work, sizes, seed: load.queued_load(
        work, imports=sizes["imports"], rows=sizes["import_rows"], exports=sizes["exports"], seed=seed),
}


def problems(figures: dict) -> list[str]:
    """What did not hold, one line each (empty: everything held)."""
    found = [f"{part} crashed: {figures[part]['error']}" for part in PARTS
             if isinstance(figures.get(part), dict) and "error" in figures[part]]
    if isinstance(figures.get("corpus"), list):
        found += [f"corpus case {r['case']}: {r['problems']}" for r in figures["corpus"] if r["problems"]]
    kills = _ran(figures, "kills")
    if kills and (kills["identical"] != kills["kills"] or kills["rows_lost"]):
        found.append(f"kills: {kills['identical']}/{kills['kills']} identical, {kills['rows_lost']} rows lost")
    for part in ("disk", "lock"):
        result = _ran(figures, part)
        if result and not result.get("skipped") and (
                result["passed"] != len(result["cases"]) or result["rows_lost"]):
            found.append(f"{part}: {result['passed']}/{len(result['cases'])} passed, "
                         f"{result['rows_lost']} rows lost")
    loaded = _ran(figures, "load")
    if loaded and not loaded.get("ok"):
        found.append(f"load: {json.dumps(_brief(loaded), default=str)[:600]}")
    return found


def _ran(figures: dict, part: str):
    """A part's figures, or None when it did not run or crashed (`problems` reports that)."""
    result = figures.get(part)
    return None if not result or (isinstance(result, dict) and "error" in result) else result


def render(figures: dict) -> str:
    corpus = _ran(figures, "corpus") or []
    kills, disk, lock, loaded = (_ran(figures, p) for p in ("kills", "disk", "lock", "load"))
    out = [
        "# Reliability",
        "",
        "What was tried against mail-pipeline, and what happened. Regenerated by "
        "`python bench/reliability.py` (about 25 minutes; `--quick` for the CI sizes). The same "
        "harnesses run at small sizes in the test suite (`tests/test_hostile.py`, "
        "`tests/test_faults.py`, `tests/test_load.py`), so CI checks every kind of fault on every change.",
        "",
        f"Run on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, dagster "
        f"{metadata.version('dagster')}, duckdb {metadata.version('duckdb')}, polars "
        f"{metadata.version('polars')}; {figures['seconds']} s in all; seed {figures['seed']}.",
        "",
        "## Summary",
        "",
        *[f"**{part} did not finish: {figures[part]['error']}**\n" for part in PARTS
          if isinstance(figures.get(part), dict) and "error" in figures[part]],
        "| what was tried | tried | survived (clear error or rows routed, or identical result) | rows lost |",
        "|---|---|---|---|",
    ]
    if corpus:
        passed = sum(not r["problems"] for r in corpus)
        out.append(f"| hostile input files and options | {len(corpus)} cases | {passed} | 0 |")
    if kills:
        stages = Counter(t["killed_in"].get("stage") for t in kills["trials"])
        late = stages.pop("finished before the kill", 0)
        where = ", ".join(f"{stage} {count}" for stage, count in stages.items())
        out.append(f"| SIGKILL during a {kills['rows']:,}-row import, then resume | {kills['kills']} kills "
                   f"({where}{f'; {late} came after it finished' if late else ''}) "
                   f"| {kills['identical']} identical to the uninterrupted import | {kills['rows_lost']} |")
    if disk:
        out.append(_fault_row("disk full (home on a small tmpfs), then resume", disk))
    if lock:
        out.append(_fault_row("the store's file held by another process", lock))
    if loaded:
        out.append(f"| {loaded.get('imports')} imports queued at once + {loaded.get('exports')} exports, "
                   f"daemon running | {loaded.get('imports')} imports | "
                   f"{'all finished, identical to one by one' if loaded.get('ok') else 'NOT ALL: see below'} "
                   f"| {_load_rows_lost(loaded)} |")
    out += ["", _security(), ""]
    if corpus:
        out += ["## Hostile input", "",
                "Each case is generated by `tests/hostile.py` and run as a user runs it "
                "(`mail-pipeline import … --json`) on a fresh home. Passing means: the expected one-line "
                "error (exit 1 or 2) or the expected categories, no traceback, no hang, a store "
                "holding exactly what the import added, no file written outside the home.", "",
                "| case | what | outcome | seconds | passed |", "|---|---|---|---|---|"]
        for r in corpus:
            outcome = r["outcome"].replace("|", "\\|").replace("\n", " ")[:160]
            out.append(f"| `{r['case']}` | {r['what']} | {outcome} | {r['seconds']} | "
                       f"{'yes' if not r['problems'] else 'NO: ' + '; '.join(r['problems'])[:200]} |")
        out.append("")
    if kills:
        out += [f"## SIGKILL at {kills['kills']} points", "",
                f"A {kills['rows']:,}-row file imported into a store of {kills['base_rows']:,} (half "
                f"of them in the file), `overwrite` on, batches of {kills['batch_size']:,} rows. The "
                f"uninterrupted import took {kills['reference_seconds']} s. Each trial starts from "
                "the same store, is killed (SIGKILL to the whole process group) at a seeded random "
                "moment, then resumed with `mail-pipeline imports resume`; its store (every table, "
                "every column) and its logs (every category file, byte for byte) are compared with "
                "the uninterrupted import's.", "",
                "| trial | killed after (s) | stage | batches committed | recovery | identical | rows lost |",
                "|---|---|---|---|---|---|---|"]
        for t in kills["trials"]:
            recovery = ", ".join(s.get("action", "?") for s in t.get("recovery", []))
            out.append(f"| {t['trial']} | {t['kill_at']} | {t['killed_in'].get('stage')} | "
                       f"{t.get('committed_batches_at_kill')} | {recovery} | "
                       f"{'yes' if t['identical'] else 'NO'} | {t['rows_lost']} |")
        out.append("")
    if disk and not disk.get("skipped"):
        out += ["## Disk full", "",
                f"The home on a tmpfs sized to fill up during one stage of a {disk['rows']:,}-row "
                "import; after the failure the tmpfs is enlarged and the import resumed.", "",
                "| disk fills in | free bytes | exit | the error, in one line | store consistent "
                "| identical after resume | rows lost |", "|---|---|---|---|---|---|---|"]
        for c in disk["cases"]:
            out.append(f"| {c['aimed_at']} | {c['free_bytes']:,} | {c['exit']} | {_cell(c.get('error'))} "
                       f"| {_yes(c['store_at_failure']['consistent'])} | {_yes(c['identical'])} "
                       f"| {c['rows_lost']} |")
        out.append("")
    if lock:
        out += ["## The store's file held by another process", "",
                f"A `duckdb` connection in another process holds the store's file while a "
                f"{lock['rows']:,}-row import starts; it lets go a few seconds after the import "
                "says it is waiting.", "",
                "| held as | the import said it waits after (s) | finished after the release (s) "
                "| exit | identical | rows lost |", "|---|---|---|---|---|---|"]
        for c in lock["cases"]:
            out.append(f"| {c['mode']} | {c['said_waiting_after']} | {c['finished_after_release']} "
                       f"| {c['exit']} | {_yes(c['identical'])} | {c['rows_lost']} |")
        out.append("")
    if loaded:
        runs, sampler = loaded.get("runs", {}), loaded.get("lock_sampler", {})
        writers = loaded.get("writers", {})
        out += ["## Load", "",
                f"`mail-pipeline ui` (webserver and daemon) on a fresh home; {loaded['imports']} files "
                f"of {loaded['rows_per_import']:,} rows (overlapping emails, different lists and "
                "options, so their order matters) queued at once with `import --detach`, and "
                f"{loaded['exports']} exports run while they drain. Then the same files are imported "
                "one by one, in the order their merges took the store, into a second home, and the "
                "two stores compared (every table; clock times replaced by the batch that wrote "
                "them).", "",
                "| measure | value |", "|---|---|",
                f"| imports finished | {loaded['finished']} of {loaded['imports']} |",
                f"| most import runs in progress at once (run records) | {runs.get('max_import_runs_at_once')} |",
                f"| most store-writing steps at once (event log, {writers.get('windows', 0)} steps) "
                f"| {writers.get('max_concurrent')} |",
                f"| merges in queue order | {_yes(loaded.get('merge_order_is_queue_order'))} "
                "(not required) |",
                f"| most holders of DuckDB's lock on the store (/proc/locks, {sampler.get('samples', 0):,} "
                f"samples) | {max(sampler.get('max_holders', {}).values(), default='none seen')} |",
                f"| lock errors in logs and output | {loaded['lock_errors']} |",
                f"| exports that match the store as it stood between two imports | {loaded['exports_ok']} "
                f"of {loaded['exports']} |",
                f"| per-import stats equal to the one-by-one run | {loaded['stats_equal']} of {loaded['imports']} |",
                f"| final store identical to the one-by-one run | {_yes(loaded['identical'])} "
                f"({loaded['subscribers']:,} subscribers) |",
                f"| queueing all imports (s) | {loaded['seconds_queueing']} |",
                f"| from the first queued to the last finished (s) | {loaded['seconds_imports']} |",
                f"| the same imports one by one (s) | {loaded['seconds_serial']} |", ""]
    return "\n".join(out)


def _load_rows_lost(loaded: dict) -> int:
    """Rows of the one-by-one run's store missing from the daemon's."""
    tables = loaded.get("comparison", {}).get("tables", {})
    return sum(table.get("only_serial", 0) for table in tables.values())


def _cell(text) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")[:200]


def _yes(flag) -> str:
    return "yes" if flag else "NO"


def _fault_row(what: str, result: dict) -> str:
    if result.get("skipped"):
        return f"| {what} | skipped | {result.get('skipped')} | – |"
    stages = ", ".join(str(c.get("aimed_at", c.get("mode", ""))) for c in result["cases"])
    return (f"| {what} | {len(result['cases'])} ({stages}) | {result['passed']} resumed to the "
            f"uninterrupted result | {result['rows_lost']} |")


def _brief(result: dict) -> dict:
    """The figures without the bulkiest lists (kept in reliability.json)."""
    return {k: v for k, v in result.items() if k not in ("runs", "intervals", "logs")}


def _security() -> str:
    return SECURITY.strip()


SECURITY = """
## Security notes

- **The Dagster UI has no authentication of its own.** Whoever reaches its port can launch,
  re-execute and terminate imports and exports, turn sensors and schedules on and off, and read
  run logs (which name files and show the first failed rows). `mail-pipeline ui` therefore
  listens on 127.0.0.1 only, and says so loudly when given another `--host`.
- **To share it, put it behind a proxy that signs users in**, and keep the UI itself on
  loopback: e.g. [oauth2-proxy](https://oauth2-proxy.github.io/oauth2-proxy/) or nginx with
  `auth_request`/basic auth in front of `127.0.0.1:3000`, over TLS, with `proxy_set_header
  Upgrade`/`Connection` so the UI's websocket works. Dagster's own `dagster-webserver
  --read-only` serves a UI that can watch but not launch or stop runs (with `dagster-daemon run`
  beside it for sensors and schedules), for people who should only look.
- **The home folder holds every subscriber in clear**: the DuckDB store, each import's staged
  file and logs, exports. Give it to the service's user only (`chmod 700`); back it up as you
  would the mailing database. The nightly `retention_job_schedule` purges finished imports' files
  after 7 days.
- **Nothing in a file is ever run or interpreted**: values reach DuckDB as bound parameters or
  Parquet columns, never as SQL text (the corpus puts SQL in names, list names, custom field
  names, tags and an export search); a ZIP is read in memory, entry by entry, never extracted,
  and an archive with a path leading out of it is refused; upload names and inbox sidecars cannot
  leave their folders (`..`, absolute paths, links elsewhere and NUL bytes are refused).
- **Exports are safe to open in a spreadsheet**: a cell starting with `=`, `+`, `-`, `@`, tab or
  CR gets a leading `'` (and the import takes it off again, so a round trip is exact).
- **Resource caps** stop a hostile file before it costs memory or disk: a ZIP entry declaring
  more than 16 GiB or inflating more than 200:1 is refused from the archive's directory; a header
  of more than 10,000 fields or a first line over 1 MiB is refused; a cell over 16 MiB or holding
  a NUL fails its row; attributes nested deeper than 64 levels fail their row; DuckDB runs under
  `MAIL_PIPELINE_MEMORY_LIMIT` (1 GB by default).
- **What is not defended**: a file that is simply huge (the import copies it once into the home,
  so the disk needs its size twice over), and terminal escapes: `mail-pipeline imports logs`
  prints failed rows as they came, control characters included; pipe it through `cat -v` when
  the file is not trusted.
"""


if __name__ == "__main__":
    sys.exit(main())
