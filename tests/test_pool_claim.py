"""The store's pool gives its one slot to one step at a time, even when run workers race for it.

Dagster's own claim (read a free slot, then update it by id) hands one slot to two workers that
both read before either updates: with Dagster's storages this test sees two or three holders at
once. The instance's event log (service/storage.py) claims in one statement. Four processes, each
with its own instance as a run worker has, claim and free the slot 60 times each; every claim is
made by a step already assigned (as two steps are when they queue for the slot at the moment it
frees), so every claim races the others, and a shared counter records the most holders at once."""
import multiprocessing as mp
import time

import pytest

from assets.names import POOL

WORKERS, CLAIMS = 4, 60


def _worker(number: int, holders, most, lock) -> None:
    from service.instance import instance
    storage = instance().event_log_storage
    for claim in range(CLAIMS):
        run_id, step_key = f"run-{number}", f"step-{claim}"
        while True:
            storage.add_pending_step(POOL, run_id, step_key, should_assign=True)
            if storage.claim_concurrency_slot(POOL, run_id, step_key).is_claimed:
                break
            time.sleep(0.001)
        with lock:
            holders.value += 1
            most.value = max(most.value, holders.value)
        time.sleep(0.002)
        with lock:
            holders.value -= 1
        storage.free_concurrency_slot_for_step(run_id, step_key)


@pytest.mark.parametrize("backend", ["embedded", "postgres"], indirect=True)
def test_one_step_holds_the_store_slot_however_workers_race(backend):
    from service.instance import instance
    from service.storage import OneStatementClaim
    storage = instance().event_log_storage
    assert isinstance(storage, OneStatementClaim), type(storage)
    assert storage.get_concurrency_info(POOL).slot_count == 1
    context = mp.get_context("spawn")  # (a fresh interpreter per worker, as a run worker is)
    holders, most, lock = context.Value("i", 0), context.Value("i", 0), context.Lock()
    workers = [context.Process(target=_worker, args=(n, holders, most, lock)) for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    assert most.value == 1
    info = storage.get_concurrency_info(POOL)
    assert info.slot_count == 1 and not info.claimed_slots


@pytest.mark.parametrize("backend", ["embedded", "postgres"], indirect=True)
def test_a_step_waits_for_the_run_holding_the_slot_and_never_for_itself(backend):
    """Whom an import waits for, through each row Dagster writes as a slot changes hands: a step
    keeps its `pending_steps` row while it holds the slot, and is stamped assigned a moment before
    its claim shows. Neither moment is a wait (it was read as one: "waits for the store's pool",
    or for itself)."""
    import dagster as dg

    from assets.names import Tags
    from service import state
    from service.instance import instance
    inst = instance()
    storage = inst.event_log_storage
    for run_id, partition in (("a" * 32, "1"), ("b" * 32, "2")):
        inst.add_run(dg.DagsterRun(job_name="import_job", run_id=run_id,
                                   tags={Tags.KIND: "import", Tags.PARTITION: partition}))
    first, second = "a" * 32, "b" * 32
    storage.add_pending_step(POOL, first, "subscribers", should_assign=True)
    assert storage.claim_concurrency_slot(POOL, first, "subscribers").is_claimed
    assert state._holder(state.records(), first) is None  # it holds the slot
    storage.add_pending_step(POOL, second, "subscribers", should_assign=False)
    assert not storage.claim_concurrency_slot(POOL, second, "subscribers").is_claimed
    assert state._holder(state.records(), second) == f"import 1 (run {first[:8]})"
    storage.free_concurrency_slot_for_step(first, "subscribers")  # hands it to the second step
    assert not storage.get_concurrency_info(POOL).claimed_slots  # (not claimed yet)
    assert state._holder(state.records(), second) is None
    assert storage.claim_concurrency_slot(POOL, second, "subscribers").is_claimed
    assert state._holder(state.records(), second) is None
