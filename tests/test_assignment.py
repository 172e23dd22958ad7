"""The assignment every replica works out alike: balanced, stable, few moves."""

from __future__ import annotations

import math
import random
from collections import Counter

from sidecar.domain.assignment import assign, share_of

ACCOUNTS = sorted(f"acct-{i}" for i in range(1000))


def test_every_account_goes_to_one_replica_and_none_beyond_its_fair_share() -> None:
    for replicas in (["r1"], ["r1", "r2"], ["r1", "r2", "r3"], [f"pod-{i}" for i in range(7)]):
        owners = assign(ACCOUNTS, replicas)
        assert sorted(owners) == ACCOUNTS
        load = Counter(owners.values())
        assert set(load) == set(replicas)
        assert max(load.values()) <= math.ceil(len(ACCOUNTS) / len(replicas)), load


def test_ten_accounts_on_three_replicas_are_spread_four_three_three() -> None:
    load = Counter(assign([f"acct-{i}" for i in range(10)], ["r1", "r2", "r3"]).values())
    assert sorted(load.values()) == [3, 3, 4]


def test_every_replica_works_out_the_same_whatever_order_it_reads_things_in() -> None:
    replicas = ["r1", "r2", "r3"]
    expected = assign(ACCOUNTS, replicas)
    shuffled_accounts, shuffled_replicas = ACCOUNTS[:], replicas[:]
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(shuffled_accounts)
        rng.shuffle(shuffled_replicas)
        assert assign(shuffled_accounts, shuffled_replicas) == expected


def test_a_replica_that_joins_takes_about_its_share_and_little_else_moves() -> None:
    before = assign(ACCOUNTS, ["r1", "r2", "r3"])
    after = assign(ACCOUNTS, ["r1", "r2", "r3", "r4"])
    moved = [a for a in ACCOUNTS if before[a] != after[a]]
    to_new = [a for a in moved if after[a] == "r4"]
    assert len(to_new) == Counter(after.values())["r4"] == 250
    # accounts moving between the old replicas, because of the bounded loads: few
    assert len(moved) - len(to_new) <= 0.1 * len(ACCOUNTS), len(moved)


def test_a_replica_that_leaves_hands_its_accounts_out_and_the_rest_mostly_stay() -> None:
    before = assign(ACCOUNTS, ["r1", "r2", "r3"])
    after = assign(ACCOUNTS, ["r1", "r2"])
    orphans = [a for a in ACCOUNTS if before[a] == "r3"]
    kept = [a for a in ACCOUNTS if before[a] != "r3" and before[a] == after[a]]
    assert all(after[a] in ("r1", "r2") for a in orphans)
    assert len(kept) >= 0.9 * (len(ACCOUNTS) - len(orphans)), len(kept)


def test_no_replicas_means_no_assignment_and_a_share_counts_the_asker_in() -> None:
    assert assign(ACCOUNTS, []) == {}
    assert share_of("r1", ["a", "b"], []) == {"a", "b"}
    mine = share_of("r2", ACCOUNTS, ["r1"])
    assert mine == {a for a, r in assign(ACCOUNTS, ["r1", "r2"]).items() if r == "r2"}
