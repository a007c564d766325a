"""Tier 2: DMP trains on 2 gloo ranks; losses fall on both and the sharded tables change."""

from c2al_rec.distributed import dmp_check
from tests.multiprocess import run_multiprocess


def test_dmp_ebc_trains_on_two_ranks() -> None:
    results = run_multiprocess(dmp_check.run, world_size=2, steps=30, batch_size=64)
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        losses = r["losses"]
        assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
        # Every table a rank holds a shard of was updated by the fused optimizer.
        assert r["table_change"], "rank holds no sharded table"
        assert all(change > 1e-3 for change in r["table_change"].values()), r["table_change"]
    # Table-wise sharding: the three tables are split across the two ranks, none duplicated.
    owned = [set(r["table_change"]) for r in results]
    assert not (owned[0] & owned[1])
    assert len(owned[0] | owned[1]) == dmp_check.NUM_TABLES
    assert all("table_wise" in p for p in results[0]["plan"].values())
