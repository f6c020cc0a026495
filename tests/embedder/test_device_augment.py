"""Batched device-side preprocessing against the per-sample CPU path it replaces on CUDA (run here on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from phenoprint.embedder.device_augment import (
    augment_batch,
    dihedral_batch,
    resize_batch,
    resized_crop_batch,
    site_statistics,
    standardize_batch,
)
from phenoprint.embedder.transforms import augment, dihedral, draw_augment, resize, standardize_site


def _sites(n: int, shape=(6, 48, 48), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_per_site_standardization_equals_the_cpu_path() -> None:
    sites = _sites(5)
    sites[1, 3] = 17  # a constant channel stays finite (std floored), as on the CPU
    got = standardize_batch(torch.from_numpy(sites))
    want = torch.stack([standardize_site(s) for s in sites])
    assert got.dtype == torch.float32
    assert got.shape == sites.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_given_statistics_equal_the_cpu_path_exactly() -> None:
    sites = _sites(3)
    mean = np.random.default_rng(1).uniform(50, 150, size=(3, 6))
    std = np.random.default_rng(2).uniform(10, 60, size=(3, 6))
    got = standardize_batch(torch.from_numpy(sites), torch.from_numpy(mean), torch.from_numpy(std))
    want = torch.stack([standardize_site(s, m, d) for s, m, d in zip(sites, mean, std, strict=True)])
    assert torch.equal(got, want)


def test_site_statistics_of_one_pixel_are_finite() -> None:
    mean, std = site_statistics(torch.full((2, 6, 1, 1), 9, dtype=torch.uint8))
    assert torch.equal(std, torch.zeros(2, 6))
    assert torch.equal(mean, torch.full((2, 6), 9.0))
    assert torch.equal(standardize_batch(torch.full((2, 6, 1, 1), 9, dtype=torch.uint8)), torch.zeros(2, 6, 1, 1))


def test_standardize_refuses_float_input_and_half_statistics() -> None:
    with pytest.raises(ValueError, match="uint8"):
        standardize_batch(torch.zeros(2, 6, 8, 8))
    with pytest.raises(ValueError, match="both mean and std"):
        standardize_batch(torch.zeros(2, 6, 8, 8, dtype=torch.uint8), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        standardize_batch(torch.zeros(2, 6, 8, 8, dtype=torch.uint8), torch.zeros(6), torch.ones(6))


@pytest.mark.parametrize("size", [20, 37, 64])  # shrink, odd, enlarge
def test_each_sample_gets_its_own_crop_window_equal_to_torchvision(size: int) -> None:
    x = torch.randn(4, 6, 48, 48)
    windows = [(0, 0, 48, 48), (3, 5, 40, 40), (10, 1, 29, 29), (47, 47, 1, 1)]
    top, left, height, width = (torch.tensor(v) for v in zip(*windows, strict=True))
    got = resized_crop_batch(x, top, left, height, width, size)
    want = torch.stack([TF.resized_crop(x[n], *w, [size, size], antialias=True) for n, w in enumerate(windows)])
    assert got.shape == (4, 6, size, size)
    torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-5)


def test_resize_batch_equals_the_cpu_resize_also_for_non_square_sites() -> None:
    x = torch.randn(3, 6, 30, 20)
    torch.testing.assert_close(resize_batch(x, 16), resize(x, 16), atol=5e-5, rtol=1e-5)
    same = torch.randn(2, 6, 16, 16)
    assert resize_batch(same, 16) is same


def test_dihedral_batch_applies_each_samples_own_transform() -> None:
    x = torch.randn(10, 2, 5, 5)
    k = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 3, 3])
    got = dihedral_batch(x, k)
    for n in range(10):
        assert torch.equal(got[n], dihedral(x[n], int(k[n])))
    with pytest.raises(ValueError, match="square"):
        dihedral_batch(torch.randn(2, 1, 4, 5), torch.tensor([0, 1]))


def _draw_batch(sites: np.ndarray, seeds: list[int], size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The device path's inputs for per-sample generators, and the CPU path's output for the same generators."""
    draws, cpu = [], []
    for site, seed in zip(sites, seeds, strict=True):
        draws.append(draw_augment(np.random.default_rng(seed), site.shape))
        cpu.append(augment(standardize_site(site), np.random.default_rng(seed), size))
    params = {
        "crop": torch.tensor([(d.top, d.left, d.side, d.side) for d in draws]),
        "k": torch.tensor([d.dihedral for d in draws]),
        "gain": torch.tensor(np.stack([d.gain for d in draws]), dtype=torch.float32),
        "bias": torch.tensor(np.stack([d.bias for d in draws]), dtype=torch.float32),
    }
    return params, torch.stack(cpu)


@pytest.mark.parametrize("size", [24, 64])
def test_identical_draws_give_the_cpu_augmentation_within_float_tolerance(size: int) -> None:
    sites = _sites(16, shape=(6, 48, 48), seed=4)
    p, want = _draw_batch(sites, list(range(100, 116)), size)
    got = augment_batch(torch.from_numpy(sites), p["crop"], p["k"], p["gain"], p["bias"], size)
    assert got.dtype == torch.float32
    assert got.shape == (16, 6, size, size)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_the_batchs_statistics_equal_the_cpu_paths() -> None:
    """Per-channel mean and spread of a whole augmented batch: what the network's first layer and batch norm see."""
    sites = _sites(64, shape=(6, 32, 32), seed=5)
    p, want = _draw_batch(sites, list(range(64)), 24)
    got = augment_batch(torch.from_numpy(sites), p["crop"], p["k"], p["gain"], p["bias"], 24)
    torch.testing.assert_close(got.mean(dim=(0, 2, 3)), want.mean(dim=(0, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.std(dim=(0, 2, 3)), want.std(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)


def test_identical_samples_get_different_augmentations_within_one_batch() -> None:
    """Per-sample draws, not one draw per batch (torchvision v2's transforms draw once per call)."""
    site = _sites(1, seed=6)[0]
    sites = np.repeat(site[None], 8, axis=0)
    p, _ = _draw_batch(sites, list(range(8)), 32)
    out = augment_batch(torch.from_numpy(sites), p["crop"], p["k"], p["gain"], p["bias"], 32)
    distinct = {tuple(out[n].flatten()[:64].tolist()) for n in range(8)}
    assert len(distinct) == 8
    assert len({tuple(g.tolist()) for g in p["gain"]}) == 8


def test_augment_batch_checks_its_parameters() -> None:
    images = torch.zeros(2, 6, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(2, 4\) crop"):
        augment_batch(
            images, torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2), torch.ones(2, 6), torch.zeros(2, 6), 8
        )
    with pytest.raises(ValueError, match="gains"):
        augment_batch(
            images, torch.tensor([[0, 0, 16, 16]] * 2), torch.zeros(2), torch.ones(2, 5), torch.zeros(2, 5), 8
        )
