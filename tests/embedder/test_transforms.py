"""Standardization and augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenoprint.embedder.transforms import augment, dihedral, resize, standardize_site


def test_per_site_standardization_matches_the_formula() -> None:
    site = np.random.default_rng(0).integers(0, 256, size=(6, 20, 30), dtype=np.uint8)
    got = standardize_site(site)
    x = site.astype(np.float64)
    want = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), ddof=1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)


def test_the_histogram_statistics_of_uint8_sites_equal_the_float_reductions() -> None:
    site = np.random.default_rng(3).integers(0, 256, size=(6, 64, 48), dtype=np.uint8)
    site[2] = 7  # a constant channel
    np.testing.assert_allclose(standardize_site(site), standardize_site(site.astype(np.float32)), atol=1e-5)


def test_given_statistics_are_used() -> None:
    site = np.full((2, 4, 4), 10, dtype=np.uint8)
    got = standardize_site(site, np.array([4.0, 6.0]), np.array([2.0, 4.0]))
    np.testing.assert_allclose(got[:, 0, 0].numpy(), [3.0, 1.0])


def test_a_constant_channel_does_not_blow_up() -> None:
    assert torch.isfinite(standardize_site(np.zeros((6, 8, 8), dtype=np.uint8))).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_one_pixel_site_standardizes_to_finite_zeros(dtype) -> None:
    """One pixel has no spread: the unbiased standard deviation is undefined (NaN), not a reason to emit NaN."""
    got = standardize_site(np.full((6, 1, 1), 9, dtype=dtype))
    assert torch.equal(got, torch.zeros(6, 1, 1))


def test_the_eight_dihedral_transforms_are_distinct_and_invertible() -> None:
    x = torch.arange(16.0).view(1, 4, 4)
    seen = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(seen) == 8
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)
    with pytest.raises(ValueError, match="0-7"):
        dihedral(x, 8)


def test_augment_is_reproducible_from_its_generator_and_resizes() -> None:
    x = standardize_site(np.random.default_rng(1).integers(0, 256, size=(6, 64, 64), dtype=np.uint8))
    a = augment(x, np.random.default_rng(5), 32)
    b = augment(x, np.random.default_rng(5), 32)
    c = augment(x, np.random.default_rng(6), 32)
    assert a.shape == (6, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="crop_scale"):
        augment(x, np.random.default_rng(0), 32, crop_scale=(0.0, 1.0))


def test_resize_is_a_no_op_at_the_target_size() -> None:
    x = torch.randn(6, 16, 16)
    assert resize(x, 16) is x
    assert resize(x, 8).shape == (6, 8, 8)
    assert resize(x.unsqueeze(0), 8).shape == (1, 6, 8, 8)
