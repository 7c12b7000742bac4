"""Names unique across the system: claims in the store (local folder and S3), the batch's source, its budget."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from reelforge.batch import Budget, NameClaims, read_source, resolve_names
from reelforge.characters.batch import BatchFileError, BatchPlan, read_csv
from reelforge.liveness import Holder
from reelforge.settings import StoreSettings
from reelforge.storage import ArtifactStore, LocalStore, character_prefix, open_store

HEADER = "character_type,character_name,age,gender,custom_prompt\n"
CSV = HEADER + "kpop_idol,Kim Minji,20,female,\nkpop_idol,,,female,\nrapper,,,,\nkpop_idol,김민지,21,female,\n"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    settings: StoreSettings = request.getfixturevalue("s3_settings")
    return open_store(settings)


def _at_once(store: ArtifactStore, plans: list[BatchPlan], owners: list[str]) -> list[BatchPlan]:
    """Resolve every plan's names in its own thread, all released at the same instant."""
    results: list[BatchPlan | None] = [None] * len(plans)
    barrier = threading.Barrier(len(plans))

    def one(i: int) -> None:
        barrier.wait()
        results[i] = resolve_names(plans[i], NameClaims(store, owners[i], batch_id=f"b{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_batches_asking_for_the_same_names_at_once_never_share_one(store: ArtifactStore) -> None:
    plan = read_csv(CSV, source="same.csv", seed=7)
    resolved = _at_once(store, [plan] * 4, [f"owner{i}" for i in range(4)])
    slugs = [r.slug for p in resolved for r in p.rows]
    assert len(slugs) == 16 and len(set(slugs)) == 16, slugs
    # Exactly one batch got each name as written; the others got a suffix or another pool name.
    given = [p for p in resolved if p.rows[0].name == "Kim Minji"]
    assert len(given) == 1
    renamed = [p.rows[0] for p in resolved if p is not given[0]]
    assert sorted(r.name for r in renamed) == ["Kim Minji 2", "Kim Minji 3", "Kim Minji 4"]
    assert all(r.renamed_from == "Kim Minji" for r in renamed)
    korean = sorted(p.rows[3].name for p in resolved)
    assert korean == ["김민지", "김민지 2", "김민지 3", "김민지 4"]


def test_the_same_batch_again_gets_its_names_back(store: ArtifactStore) -> None:
    plan = read_csv(CSV, source="again.csv", seed=7)
    first = resolve_names(plan, NameClaims(store, "mine", batch_id="b1"))
    other = resolve_names(plan, NameClaims(store, "theirs", batch_id="b2"))
    again = resolve_names(plan, NameClaims(store, "mine", batch_id="b3"))
    assert [r.name for r in again.rows] == [r.name for r in first.rows]
    assert not {r.slug for r in other.rows} & {r.slug for r in first.rows}


def test_a_character_already_in_the_store_keeps_its_name(store: ArtifactStore) -> None:
    store.reserve_version(character_prefix("kim-minji"), Holder.current(label="Kim Minji"))  # a single run
    plan = read_csv(HEADER + "kpop_idol,Kim Minji,20,female,\n", source="x.csv")
    (row,) = resolve_names(plan, NameClaims(store, "owner", batch_id="b")).rows
    assert (row.name, row.renamed_from) == ("Kim Minji 2", "Kim Minji")


def test_read_source_from_a_path_and_from_s3(tmp_path: Path, s3_settings: StoreSettings, s3_client: Any) -> None:
    path = tmp_path / "b.csv"
    path.write_text(CSV, encoding="utf-8")
    assert read_source(str(path), s3_settings, max_bytes=10_000) == CSV.encode()
    bucket = s3_settings.store.removeprefix("s3://")
    s3_client.put_object(Bucket=bucket, Key="in/b.csv", Body=CSV.encode())
    assert read_source(f"s3://{bucket}/in/b.csv", s3_settings, max_bytes=10_000) == CSV.encode()
    with pytest.raises(BatchFileError, match=re.escape(f"s3://{bucket}/in/nope.csv: no such object")):
        read_source(f"s3://{bucket}/in/nope.csv", s3_settings, max_bytes=10_000)
    with pytest.raises(BatchFileError, match="over the limit of 10 "):
        read_source(f"s3://{bucket}/in/b.csv", s3_settings, max_bytes=10)
    with pytest.raises(BatchFileError, match=r"nope\.csv: no such file"):
        read_source(str(tmp_path / "nope.csv"), s3_settings, max_bytes=10)
    with pytest.raises(BatchFileError, match="is a folder"):
        read_source(str(tmp_path), s3_settings, max_bytes=10)


def test_budget_refuses_what_would_pass_it() -> None:
    budget = Budget(max_gpu_hours=1.0, estimate_gpu_s=1000.0)
    assert budget.refusal(running=2) is None  # 3 x 1000 s < 1 h
    assert budget.refusal(running=3) is not None  # 4 x 1000 s > 1 h
    budget.record(3000.0, 0.0)  # the first character took 3000 s: the estimate follows
    reason = budget.refusal(running=0)
    assert reason is not None and "--max-gpu-hours 1" in reason
    cost = Budget(max_cost=10.0, estimate_gpu_s=3600.0, price_per_hour=4.0)
    assert cost.refusal(running=1) is None and cost.refusal(running=2) is not None
    cached = Budget(max_cost=10.0, estimate_gpu_s=3600.0, price_per_hour=4.0)
    cached.record(0.0, 0.0, executed=False)  # served from cache: says nothing about the next one's cost
    assert cached.estimate() == (3600.0, 4.0)
    assert Budget().refusal(running=10**6) is None
    with pytest.raises(ValueError, match="max_cost"):
        Budget(max_cost=-1)
