"""Well tables, datasets and the group batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenoprint.embedder.data import (
    GroupBatchSampler,
    WellDataset,
    collate_sites,
    experiment_channel_stats,
    well_table,
)


def test_well_table_lists_the_sites_of_each_well(fake_source) -> None:
    wells = well_table(fake_source.metadata)
    assert len(wells) == len(fake_source.metadata) // 2
    assert set(wells.sites) == {(1, 2)}
    with pytest.raises(ValueError, match="lacks column"):
        well_table(fake_source.metadata.drop(columns=["site"]))


def test_training_items_are_deterministic_per_epoch_and_index(fake_source) -> None:
    wells = well_table(fake_source.metadata)
    ds = WellDataset(fake_source, wells, image_size=16, train=True, seed=3)
    a, b, c = ds[(0, 4)], ds[(0, 4)], ds[(1, 4)]
    assert a["image"].shape == (6, 16, 16)
    assert torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], c["image"])
    assert a["label"] == int(wells.sirna_id[4])


def test_inference_items_hold_every_site(fake_source) -> None:
    wells = well_table(fake_source.metadata)
    ds = WellDataset(fake_source, wells, image_size=16, train=False)
    batch = collate_sites([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (6, 6, 16, 16)
    assert batch["well_of_site"].tolist() == [0, 0, 1, 1, 2, 2]


def test_group_sampler_batches_come_from_one_group_and_cover_every_item() -> None:
    groups = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 7)
    sampler = GroupBatchSampler(groups, len(groups), batch_size=4, seed=0)
    batches = list(sampler)
    assert all(len(b) == 4 for b in batches)
    assert all(len({groups[i] for _, i in b}) == 1 for b in batches)
    assert {i for b in batches for _, i in b} == set(range(20))
    assert len(batches) == len(sampler) == 3 + 1 + 2


def test_group_sampler_order_follows_seed_and_epoch_and_can_skip() -> None:
    s = GroupBatchSampler(None, 20, batch_size=5, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0, start_batch=2)
    assert list(s) == e0[2:]
    assert len(s) == 2


def test_one_pass_through_several_epochs_is_those_epochs_back_to_back() -> None:
    s = GroupBatchSampler(np.repeat(np.arange(3), 7), 21, batch_size=4, seed=2)
    epochs = []
    for e in range(4):
        s.set_epoch(e)
        epochs.append(list(s)[:5])  # each epoch cut to the 5 batches the schedule uses
    s.set_epoch(1, start_batch=3, through=4, per_epoch=5)
    spanned = list(s)
    assert spanned == epochs[1][3:] + epochs[2] + epochs[3]
    assert len(s) == len(spanned)
    assert {e for batch in spanned for e, _ in batch} == {1, 2, 3}


def test_group_sampler_splits_batches_among_ranks() -> None:
    groups = np.repeat(np.arange(4), 8)
    r0 = list(GroupBatchSampler(groups, 32, 4, seed=0, rank=0, world_size=2))
    r1 = list(GroupBatchSampler(groups, 32, 4, seed=0, rank=1, world_size=2))
    assert len(r0) == len(r1) == 4
    assert not {i for b in r0 for _, i in b} & {i for b in r1 for _, i in b}


def test_experiment_channel_stats(fake_source) -> None:
    wells = well_table(fake_source.metadata)
    stats = experiment_channel_stats(fake_source, wells, max_sites=4)
    assert set(stats) == set(wells.experiment)
    mean, std = stats["HUVEC-01"]
    assert mean.shape == std.shape == (6,)
    assert (std > 0).all()
