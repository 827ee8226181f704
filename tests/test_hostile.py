"""The hostile-input corpus (tests/hostile.py): every case ends in one clear error or in rows
routed to `failed`; never a traceback, a hang, a half-written store or a file outside the home."""
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import hostile

CASES = hostile.cases()


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict:
    """The selected cases run once each, a case per core at a time (each is a `mail-pipeline`
    process on its own home, so they cannot meet)."""
    selected = {_case_of(item) for item in request.session.items if item.module is request.module}
    root = tmp_path_factory.mktemp("hostile")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = pool.map(lambda case: hostile.run(case, root / case.name),
                        [case for case in CASES if case.name in selected])
        return {result["case"]: result for result in done}


def _case_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params["case"].name if callspec and "case" in callspec.params else None


def test_the_corpus_has_at_least_fifty_cases():
    assert len(CASES) >= 50
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input(case, results):
    assert results[case.name]["problems"] == [], results[case.name]
