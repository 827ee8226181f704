"""What provenance and before-images (issue 16) cost an import: the same 1M-row import timed with
the code before them (a git ref) and with this checkout, alternating, in one run.

    python bench/undo_cost.py --baseline b81495f            # 1M rows, 3 rounds
    python bench/undo_cost.py --baseline b81495f --rows 100000 --rounds 1

Each timing is a fresh home holding N/2 subscribers (untimed), then an import of N rows
(shared/bench/make_subscribers.py, the benchmark's files) through the core stages, in a child
process of its own. Scenarios: `plain` (the store's half is skipped_overwrite, the rest added),
`overwrite` (the half is updated with the same values: nothing changes, so nothing is kept) and
`tagged` (overwrite with --tag: every existing subscriber really changes, the worst case).
Prints one JSON line per timing, then the median ratio per scenario.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE = ROOT.parent / "shared" / "bench" / "make_subscribers.py"
SCENARIOS = {"plain": {}, "overwrite": {"overwrite": True},
             "tagged": {"overwrite": True, "tags": ["again"]}}

# Runs in the child, with the code under test first on its path.
CHILD = """
import json, os, sys, tempfile, time
from pathlib import Path
os.environ["MAIL_PIPELINE_HOME"] = tempfile.mkdtemp(dir=sys.argv[1])
from mail_pipeline import home, pipeline
from mail_pipeline.options import build

def run(path, **options):
    folder = pipeline.Folder.of(home.new_import_id())
    pipeline.stage_raw(folder, build(options), Path(path))
    pipeline.validate_import(folder)
    pipeline.merge_import(folder, home.database_path())
    return pipeline.write_import_logs(folder)

run(sys.argv[2], lists=["news"])
start = time.perf_counter()
run(sys.argv[3], lists=["news"], **json.loads(sys.argv[4]))
took = time.perf_counter() - start
import shutil; shutil.rmtree(os.environ["MAIL_PIPELINE_HOME"], ignore_errors=True)
print(took)
"""


def _files(work: Path, rows: int) -> tuple[Path, Path]:
    base, data = work / f"base-{rows // 2}.csv", work / f"import-{rows}.csv"
    for path, n in ((base, rows // 2), (data, rows)):
        if not path.exists():
            subprocess.run([sys.executable, str(MAKE), "--rows", str(n), "--out", str(path)], check=True)
    return base, data


def _baseline(work: Path, ref: str) -> Path:
    tree = work / f"code-{ref}"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _time(code: Path, work: Path, base: Path, data: Path, options: dict) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(work), str(base), str(data), json.dumps(options)],
                          env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                          capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the git ref before issue 16")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "bench-data"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, data = _files(work, args.rows)
    before = _baseline(work, args.baseline)
    homes = Path(tempfile.mkdtemp(dir=work))
    seconds: dict = {}
    for _ in range(args.rounds):
        for scenario, options in SCENARIOS.items():
            for side, code in (("before", before), ("after", ROOT)):
                took = _time(code, homes, base, data, options)
                seconds.setdefault((scenario, side), []).append(took)
                print(json.dumps({"scenario": scenario, "code": side, "seconds": round(took, 2)}), flush=True)
    for scenario in SCENARIOS:
        b, a = (statistics.median(seconds[scenario, side]) for side in ("before", "after"))
        print(json.dumps({"scenario": scenario, "before": round(b, 2), "after": round(a, 2),
                          "ratio": round(a / b, 3)}))


if __name__ == "__main__":
    main()
