"""uint8 datasets finished on the device: the same tensors, draws and embeddings as the loader path (on the CPU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.embedder.data import WellDataset, collate_sites, collate_train, experiment_channel_stats, well_table
from phenoprint.embedder.device_data import (
    InferencePrepare,
    RawWellDataset,
    TrainPrepare,
    collate_raw_sites,
    collate_raw_train,
    preprocess_on_device,
)
from phenoprint.embedder.inference import embed_wells
from phenoprint.embedder.model import Embedder
from phenoprint.embedder.prefetch import DevicePrefetcher
from phenoprint.embedder.train import train

CPU = torch.device("cpu")


def test_auto_preprocesses_on_cuda_and_in_the_loader_on_a_cpu() -> None:
    assert preprocess_on_device("auto", torch.device("cuda"))
    assert not preprocess_on_device("auto", CPU)
    assert preprocess_on_device("device", CPU)
    assert not preprocess_on_device("loader", torch.device("cuda"))
    with pytest.raises(ValueError, match="auto, loader, device"):
        preprocess_on_device("gpu", CPU)
    with pytest.raises(ValueError, match="preprocess_on"):
        TrainConfig(preprocess_on="gpu")  # type: ignore[arg-type]


def _datasets(source, train: bool, **kw) -> tuple[WellDataset, RawWellDataset]:
    wells = well_table(source.metadata)
    args = {"image_size": 24, "train": train, "seed": 3, **kw}
    return WellDataset(source, wells, **args), RawWellDataset(source, wells, **args)


def test_training_items_are_uint8_and_deterministic_per_seed_epoch_and_index(fake_source) -> None:
    _, raw = _datasets(fake_source, True)
    a, b, c = raw[(0, 4)], raw[(0, 4)], raw[(1, 4)]
    assert a["image"].dtype == torch.uint8
    assert a["image"].shape == (6, 32, 32)
    assert a["crop"].dtype == torch.int64
    assert a["gain"].dtype == torch.float32
    assert a["gain"].shape == (6,)
    for key in ("image", "crop", "gain", "bias"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["gain"], c["gain"])
    other_seed = RawWellDataset(fake_source, well_table(fake_source.metadata), image_size=24, train=True, seed=4)
    assert not torch.equal(a["gain"], other_seed[(0, 4)]["gain"])


@pytest.mark.parametrize("normalization", ["site", "experiment"])
@pytest.mark.parametrize("augment", [True, False])
def test_a_training_batch_finished_on_the_device_equals_the_loader_path(fake_source, normalization, augment) -> None:
    stats = None
    if normalization == "experiment":
        stats = experiment_channel_stats(fake_source, well_table(fake_source.metadata))
    loader_ds, raw_ds = _datasets(fake_source, True, augment=augment, channel_stats=stats)
    keys = [(2, i) for i in range(12)]
    want = collate_train([loader_ds[k] for k in keys])
    got = TrainPrepare(24)(collate_raw_train([raw_ds[k] for k in keys]), CPU)
    assert got["image"].dtype == torch.float32
    assert got["image"].shape == (12, 6, 24, 24)
    torch.testing.assert_close(got["image"], want["image"], atol=1e-4, rtol=1e-4)
    for key in ("label", "cell_type", "index"):
        assert torch.equal(got[key], want[key])


@pytest.mark.parametrize("normalization", ["site", "experiment"])
def test_an_inference_batch_finished_on_the_device_equals_the_loader_path(fake_source, normalization) -> None:
    stats = None
    if normalization == "experiment":
        stats = experiment_channel_stats(fake_source, well_table(fake_source.metadata))
    loader_ds, raw_ds = _datasets(fake_source, False, channel_stats=stats)
    want = collate_sites([loader_ds[i] for i in range(5)])
    raw = collate_raw_sites([raw_ds[i] for i in range(5)])
    assert raw["image"].dtype == torch.uint8
    assert raw["image"].shape == (10, 6, 32, 32)
    got = InferencePrepare(24)(raw, CPU)
    torch.testing.assert_close(got["image"], want["image"], atol=1e-4, rtol=1e-4)
    assert torch.equal(got["well_of_site"], want["well_of_site"])
    assert torch.equal(got["index"], want["index"])


def test_sites_of_different_sizes_in_one_batch_are_refused_with_a_way_out(fake_source) -> None:
    _, raw = _datasets(fake_source, True)
    small = {**raw[0], "image": torch.zeros(6, 16, 16, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="--preprocess-on loader"):
        collate_raw_train([raw[1], small])


@pytest.mark.slow
def test_embedding_on_the_device_path_gives_the_loader_paths_vectors(fake_source) -> None:
    config = TrainConfig(model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8), image_size=24)
    torch.manual_seed(0)
    embedder = Embedder(config.model).eval()
    wells = well_table(fake_source.metadata).iloc[::2]  # every experiment, half its wells
    out = {
        where: embed_wells(
            embedder, fake_source, wells, config=config, device=CPU, batch_size=4, tta=8, preprocess_on=where
        )
        for where in ("loader", "device")
    }
    np.testing.assert_allclose(out["device"].vectors, out["loader"].vectors, atol=1e-4)
    adapted = {
        where: embed_wells(
            embedder, fake_source, wells, config=config, device=CPU, bn_adapt=True, progress=False, preprocess_on=where
        )
        for where in ("loader", "device")
    }
    np.testing.assert_allclose(adapted["device"].vectors, adapted["loader"].vectors, atol=1e-4)


@pytest.mark.slow
def test_training_on_the_device_path_follows_the_loader_paths_losses(fake_source, tmp_path: Path) -> None:
    """Same seeds, same draws: the two paths feed the same batches (up to float rounding of the inputs), so the
    first step's loss agrees closely and the second's within 1% (Adam's first update is about lr x sign(gradient),
    so gradients near zero whose sign the rounding flips move their weights by 2 lr: under load the CPU kernels'
    rounding varies, and a full `make test` once saw 0.1% at the second step)."""
    base = TrainConfig(
        model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8, head="cosface", margin=0.1, scale=8),
        image_size=24,
        epochs=1,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        workers=0,
        device="cpu",
        checkpoint_every=100,
    )
    losses: dict[str, list[float]] = {"loader": [], "device": []}
    for where, seen in losses.items():
        torch.manual_seed(0)
        train(
            replace(base, preprocess_on=where),
            fake_source,
            tmp_path / where,
            progress=False,
            on_step=lambda _step, loss, seen=seen: seen.append(loss),
        )
    assert len(losses["loader"]) == len(losses["device"]) == 3
    np.testing.assert_allclose(losses["device"][0], losses["loader"][0], rtol=1e-4)
    np.testing.assert_allclose(losses["device"][1], losses["loader"][1], rtol=1e-2)


def test_the_prefetcher_hands_out_every_batch_prepared_and_in_order(fake_source) -> None:
    _, raw = _datasets(fake_source, False)
    loader = DataLoader(raw, batch_size=3, collate_fn=collate_raw_sites)
    batches = list(DevicePrefetcher(loader, CPU, InferencePrepare(16)))
    assert len(batches) == len(DevicePrefetcher(loader, CPU, InferencePrepare(16))) == len(loader)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(raw)))
    assert all(b["image"].dtype == torch.float32 and b["image"].shape[-2:] == (16, 16) for b in batches)


def test_the_prefetcher_makes_no_cuda_stream_on_a_cpu_and_passes_errors_on(monkeypatch) -> None:
    def no_stream(*_a, **_k):
        raise AssertionError("a CUDA stream was asked for on the CPU")

    monkeypatch.setattr(torch.cuda, "Stream", no_stream)

    def failing():
        yield {"x": torch.zeros(1)}
        raise RuntimeError("worker died")

    it = iter(DevicePrefetcher(failing(), CPU, lambda b, d: b))
    with pytest.raises(RuntimeError, match="worker died"):
        next(it)  # the second batch is fetched before the first is handed out: one batch ahead


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_prefetched_batches_equal_the_cpu_ones(fake_source) -> None:
    _, raw = _datasets(fake_source, True)
    loader = DataLoader(raw, batch_size=6, collate_fn=collate_raw_train, pin_memory=True)
    cuda = torch.device("cuda")
    for got, batch in zip(DevicePrefetcher(loader, cuda, TrainPrepare(24, True)), loader, strict=True):
        assert got["image"].is_cuda
        assert got["image"].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got["image"].cpu(), TrainPrepare(24)(batch, CPU)["image"], atol=1e-4, rtol=1e-4)


class _SixteenBit:
    """The fake source's sites scaled to 16 bits (x 257 plus a low-bit pattern), as a LoadData source delivers them."""

    def __init__(self, source) -> None:  # type: ignore[no-untyped-def]
        self.source = source

    metadata = property(lambda self: self.source.metadata)
    channel_names = property(lambda self: self.source.channel_names)

    def with_images(self, metadata, skipped):  # type: ignore[no-untyped-def]
        return metadata

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        raw = self.source.load(experiment, plate, well, site).astype(np.uint16)
        return raw * 257 + (np.arange(raw.size, dtype=np.uint16).reshape(raw.shape) % 7)


def test_16_bit_sites_finished_on_the_device_equal_the_loader_path(fake_source) -> None:
    source = _SixteenBit(fake_source)
    loader_ds, raw_ds = _datasets(source, False)
    want = collate_sites([loader_ds[i] for i in range(3)])
    raw = collate_raw_sites([raw_ds[i] for i in range(3)])
    assert raw["image"].dtype == torch.int32  # uint16 values, exactly, in a type every kernel has
    got = InferencePrepare(24)(raw, CPU)
    torch.testing.assert_close(got["image"], want["image"], atol=1e-4, rtol=1e-4)
