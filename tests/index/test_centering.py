"""Batch centering against the textbook formulas, TVN whitening, and the stored statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phenoprint.index.centering import (
    CenteringStats,
    apply_centering,
    apply_centering_by,
    center_on_controls,
    fit_centering,
    fit_centering_by,
    l2_normalize,
    load_centering,
    save_centering,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _batch(n: int = 60, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 3 + rng.normal(size=d) * 10
    mask = np.zeros(n, dtype=bool)
    mask[: n // 3] = True
    return x, mask


def _inv_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v / np.sqrt(w)) @ v.T


def test_center_on_controls_is_the_textbook_formula() -> None:
    x, mask = _batch()
    np.testing.assert_allclose(center_on_controls(x, mask), x - x[mask].mean(axis=0))


def test_none_only_normalizes() -> None:
    x, mask = _batch()
    out = apply_centering(x, fit_centering(x, mask, "none"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _unit(x), rtol=1e-5, atol=1e-6)


def test_center_subtracts_the_reference_mean_then_normalizes() -> None:
    x, mask = _batch()
    out = apply_centering(x, fit_centering(x, mask, "center"))
    np.testing.assert_allclose(out, _unit(center_on_controls(x, mask)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_center_scale_standardizes_on_the_reference() -> None:
    x, mask = _batch()
    ref = x[mask]
    want = (x - ref.mean(axis=0)) / ref.std(axis=0)
    stats = fit_centering(x, mask, "center_scale")
    np.testing.assert_allclose(apply_centering(x, stats, normalize=False), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(apply_centering(x, stats), _unit(want), rtol=1e-5, atol=1e-6)


def test_tvn_full_rank_is_the_regularized_inverse_square_root_of_the_covariance() -> None:
    x, mask = _batch(n=300, d=6)
    ridge = 0.05
    ref = x[mask]
    z_all = (x - ref.mean(axis=0)) / ref.std(axis=0)
    z = z_all[mask]
    cov = z.T @ z / len(z)
    lam = ridge * np.trace(cov) / cov.shape[0]
    want = z_all @ _inv_sqrt(cov + lam * np.eye(6))
    stats = fit_centering(x, mask, "tvn", ridge=ridge)
    assert stats.components.shape == (6, 6)
    np.testing.assert_allclose(apply_centering(x, stats, normalize=False), want, rtol=1e-4, atol=1e-4)


def test_tvn_leaves_the_reference_covariance_near_identity() -> None:
    x, mask = _batch(n=3000, d=8, seed=3)
    y = apply_centering(x, fit_centering(x, mask, "tvn", ridge=1e-6), normalize=False).astype(np.float64)
    ref = y[mask]
    cov = np.cov(ref, rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.eye(8), atol=1e-3)
    np.testing.assert_allclose(ref.mean(axis=0), 0.0, atol=1e-4)


def test_tvn_after_pca_whitens_the_principal_subspace_and_keeps_coordinates() -> None:
    x, mask = _batch(n=1200, d=10, seed=4)
    stats = fit_centering(x, mask, "tvn", pca_dim=4, ridge=1e-6)
    assert stats.components.shape == (10, 4)
    y = apply_centering(x, stats, normalize=False).astype(np.float64)[mask]
    proj = y @ stats.components  # coordinates on the 4 principal axes of the reference
    np.testing.assert_allclose(np.cov(proj, rowvar=False, bias=True), np.eye(4), atol=1e-3)
    # the transform is the symmetric (Σ_ppca + λI)^(-1/2), so it stays in the feature coordinates
    ref = x[mask]
    z = (ref - ref.mean(axis=0)) / ref.std(axis=0)
    cov = z.T @ z / len(z)
    w, v = np.linalg.eigh(cov)
    w, v = w[::-1], v[:, ::-1]
    rest = w[4:].mean()
    ppca = (v[:, :4] * w[:4]) @ v[:, :4].T + rest * (np.eye(10) - v[:, :4] @ v[:, :4].T)
    lam = 1e-6 * np.trace(cov) / 10
    np.testing.assert_allclose(y, z @ _inv_sqrt(ppca + lam * np.eye(10)), rtol=1e-4, atol=1e-4)


def test_tvn_with_fewer_wells_than_features_matches_the_covariance_route() -> None:
    """The Gram-matrix shortcut (n < d) gives the same transform as eigen-decomposing the d x d covariance."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 30)) * rng.uniform(0.5, 3, 30)
    mask = np.zeros(40, dtype=bool)
    mask[:12] = True
    stats = fit_centering(x, mask, "tvn", pca_dim=5, ridge=0.1)
    ref = x[mask]
    z = (ref - ref.mean(axis=0)) / ref.std(axis=0)
    cov = z.T @ z / len(z)
    w, v = np.linalg.eigh(cov)
    w, v = w[::-1], v[:, ::-1]
    rest = (np.trace(cov) - w[:5].sum()) / 25
    ppca = (v[:, :5] * w[:5]) @ v[:, :5].T + rest * (np.eye(30) - v[:, :5] @ v[:, :5].T)
    lam = 0.1 * np.trace(cov) / 30
    z_all = (x - ref.mean(axis=0)) / ref.std(axis=0)
    np.testing.assert_allclose(
        apply_centering(x, stats, normalize=False), z_all @ _inv_sqrt(ppca + lam * np.eye(30)), rtol=1e-4, atol=1e-4
    )


def test_default_pca_dim_is_half_the_reference_wells() -> None:
    x, mask = _batch(n=60, d=40)
    assert fit_centering(x, mask, "tvn").components.shape == (40, 10)


@pytest.mark.parametrize("method", ["center", "center_scale", "tvn"])
def test_constant_features_stay_finite(method: str) -> None:
    x, mask = _batch()
    x[:, 2] = 7.0
    out = apply_centering(x, fit_centering(x, mask, method))
    assert np.isfinite(out).all()


@settings(max_examples=25, deadline=None)
@given(
    offset=st.lists(st.floats(-1e3, 1e3), min_size=6, max_size=6),
    log_gain=st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    method=st.sampled_from(["center_scale", "tvn"]),
)
def test_a_batch_offset_and_feature_gains_are_removed(offset: list[float], log_gain: list[float], method: str) -> None:
    """Shifting and rescaling every well of a batch per feature leaves its centred vectors unchanged."""
    x, mask = _batch()
    shifted = x * np.exp(log_gain) + np.asarray(offset)
    a = apply_centering(x, fit_centering(x, mask, method))
    b = apply_centering(shifted, fit_centering(shifted, mask, method))
    np.testing.assert_allclose(a, b, atol=2e-4)


_ALL = np.ones(60, dtype=bool)
_ONE = np.eye(1, 60, dtype=bool)[0]


@pytest.mark.parametrize(
    ("method", "mask", "options", "message"),
    [
        ("whiten", _ALL, {}, "method must be one of"),
        ("center", np.ones(3, dtype=bool), {}, r"reference_mask must be a boolean array of shape \(60,\)"),
        ("center", np.ones(60), {}, "reference_mask must be a boolean array"),
        ("center_scale", _ONE, {}, "needs at least 2 reference well"),
        ("center", ~_ALL, {}, "needs at least 1 reference well"),
        ("tvn", _ALL, {"pca_dim": 7}, "pca_dim must be between 1 and the dimension 6; got 7"),
        ("tvn", _ALL, {"ridge": 0.0}, "ridge must be > 0"),
    ],
)
def test_bad_arguments_are_refused(method: str, mask: np.ndarray, options: dict, message: str) -> None:
    x, _ = _batch()
    with pytest.raises(ValueError, match=message):
        fit_centering(x, mask, method, **options)


def test_shape_errors_say_what_was_expected() -> None:
    x, mask = _batch()
    stats = fit_centering(x, mask, "center")
    with pytest.raises(ValueError, match="dimension 5 but the centering statistics were fitted on 6"):
        apply_centering(x[:, :5], stats)
    with pytest.raises(ValueError, match=r"2-D array \(n, d\)"):
        apply_centering(x[0], stats)
    with pytest.raises(ValueError, match="selects no row"):
        center_on_controls(x, np.zeros(60, dtype=bool))


def test_statistics_round_trip_through_npz_without_pickle(tmp_path: Path) -> None:
    x, mask = _batch(n=80, d=12)
    stats = {m: fit_centering(x, mask, m) for m in ("none", "center", "center_scale", "tvn")}
    path = save_centering(tmp_path / "c.npz", stats)
    with np.load(path, allow_pickle=False) as data:
        assert "keys" in data.files
    back = load_centering(path)
    assert list(back) == list(stats)
    for key, s in stats.items():
        np.testing.assert_array_equal(apply_centering(x, back[key]), apply_centering(x, s))
        assert back[key].method == s.method
        assert back[key].n_reference == s.n_reference
    single = stats["tvn"].to_npz(tmp_path / "one.npz")
    assert CenteringStats.from_npz(single).ridge == stats["tvn"].ridge
    with pytest.raises(ValueError, match="expected one set"):
        CenteringStats.from_npz(path)


def test_grouped_fit_equals_separate_fits() -> None:
    x1, m1 = _batch(seed=1)
    x2, m2 = _batch(seed=2)
    x = np.concatenate([x1, x2])
    keys = np.array(["a"] * 60 + ["b"] * 60)
    stats = fit_centering_by(x, keys, np.concatenate([m1, m2]), "tvn")
    out = apply_centering_by(x, keys, stats)
    np.testing.assert_allclose(out[:60], apply_centering(x1, fit_centering(x1, m1, "tvn")), atol=1e-6)
    np.testing.assert_allclose(out[60:], apply_centering(x2, fit_centering(x2, m2, "tvn")), atol=1e-6)
    with pytest.raises(ValueError, match="no centering statistics for batch"):
        apply_centering_by(x, np.array(["a"] * 119 + ["c"]), stats)
    with pytest.raises(ValueError, match="batch b: method 'center' needs at least 1"):
        fit_centering_by(x, keys, np.r_[m1, np.zeros(60, dtype=bool)], "center")


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


# --- robust standardization and sphering (pycytominer's mad_robustize / spherize, TVN on pooled PCA) ---------------


def _cov_inv_sqrt(z: np.ndarray, epsilon: float) -> np.ndarray:
    """(Σ + εI)^(-1/2) of the unbiased covariance, by eigendecomposition (the textbook ZCA matrix)."""
    w, v = np.linalg.eigh(np.cov(z, rowvar=False))
    return (v / np.sqrt(w + epsilon)) @ v.T


def _mad_robustize(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    med = np.median(ref, axis=0)
    return (x - med) / (1.4826 * np.median(np.abs(ref - med), axis=0))


def test_mad_robustize_is_median_over_scaled_mad() -> None:
    x, mask = _batch()
    stats = fit_centering(x, mask, "mad_robustize")
    np.testing.assert_allclose(apply_centering(x, stats, normalize=False), _mad_robustize(x, x[mask]), rtol=1e-5)


def test_mad_robustize_matches_pycytominer() -> None:
    pytest.importorskip("pycytominer", reason="pycytominer (the profiles extra) is not installed")
    import pandas as pd
    from pycytominer.operations.transform import RobustMAD

    x, mask = _batch()
    want = RobustMAD().fit(pd.DataFrame(x[mask])).transform(pd.DataFrame(x)).to_numpy()
    got = apply_centering(x, fit_centering(x, mask, "mad_robustize"), normalize=False)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mad_robustize_leaves_a_feature_of_zero_mad_at_its_spread() -> None:
    x, mask = _batch()
    x[:, 0] = 1.0
    x[:3, 0] = 2.0  # MAD 0 on the reference: pycytominer would divide by 1e-18
    stats = fit_centering(x, mask, "mad_robustize")
    assert stats.scale[0] == pytest.approx(x[mask, 0].std())


def test_zca_whitens_the_robustized_reference_to_identity_covariance() -> None:
    x, mask = _batch(n=300, d=6)
    eps = 1e-6
    r = _mad_robustize(x, x[mask])
    want = (r - r[mask].mean(axis=0)) @ _cov_inv_sqrt(r[mask], eps)
    stats = fit_centering(x, mask, "zca", epsilon=eps)
    got = apply_centering(x, stats, normalize=False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.cov(got[mask], rowvar=False), np.eye(6), atol=1e-3)  # whitened in float32


def test_zca_cor_is_the_correlation_whitening_of_kessy_et_al() -> None:
    x, mask = _batch(n=300, d=6)
    eps = 1e-6
    r = _mad_robustize(x, x[mask])[mask]
    v = r.std(axis=0)  # pycytominer standardizes with the population variance
    z = (r - r.mean(axis=0)) / v
    w, g = np.linalg.eigh(np.cov(z, rowvar=False))  # the correlation matrix (up to n/(n-1))
    want = z @ ((g / np.sqrt(w + eps)) @ g.T)
    got = apply_centering(x[mask], fit_centering(x, mask, "zca_cor", epsilon=eps), normalize=False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("method", "theirs"), [("zca", "ZCA"), ("zca_cor", "ZCA-cor")])
def test_sphering_matches_pycytominer_spherize(method: str, theirs: str) -> None:
    pytest.importorskip("pycytominer", reason="pycytominer (the profiles extra) is not installed")
    import pandas as pd
    from pycytominer.operations.transform import Spherize

    x, mask = _batch(n=300, d=6)
    r = pd.DataFrame(_mad_robustize(x, x[mask]))
    want = Spherize(method=theirs).fit(r[mask]).transform(r).to_numpy()
    got = apply_centering(x, fit_centering(x, mask, method), normalize=False)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)  # they add ε to singular values, we to eigenvalues


def test_sphering_with_fewer_wells_than_features_stays_bounded() -> None:
    x, mask = _batch(n=30, d=40)  # 10 reference wells, 40 features
    stats = fit_centering(x, mask, "zca")
    assert stats.components.shape[1] <= 9
    # directions the wells do not span get the smallest estimated eigenvalue's gain, not 1/sqrt(ε) = 1000
    r = _mad_robustize(x[mask], x[mask])
    w = np.linalg.eigvalsh(np.cov(r, rowvar=False))
    smallest = w[w > w.max() * 1e-10].min()
    assert stats.isotropic == pytest.approx(1.0 / np.sqrt(smallest + 1e-6), rel=1e-4)
    assert stats.gains[-1] == pytest.approx(0.0, abs=1e-6)


def test_pooled_sphering_is_one_whitening_fitted_on_every_batch_residuals() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    keys = np.repeat(["a", "b"], 100)
    x[keys == "b"] = x[keys == "b"] * 3 + 7  # batch b: another gain and offset
    mask = rng.random(200) < 0.5
    stats = fit_centering_by(x, keys, mask, "zca")
    np.testing.assert_allclose(stats["a"].components, stats["b"].components)
    np.testing.assert_allclose(stats["a"].gains, stats["b"].gains)
    pooled = np.concatenate([_mad_robustize(x[keys == k], x[(keys == k) & mask]) for k in "ab"])
    rmask = np.concatenate([mask[keys == k] for k in "ab"])
    want = (pooled - pooled[rmask].mean(axis=0)) @ _cov_inv_sqrt(pooled[rmask], 1e-6)
    got = np.concatenate([apply_centering(x[keys == k], stats[k], normalize=False) for k in "ab"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tvn_pooled_is_tvn_of_the_standardized_residuals_pooled() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 6)) @ rng.normal(size=(6, 6))
    keys = np.repeat(["a", "b", "c"], 40)
    mask = np.ones(120, dtype=bool)
    stats = fit_centering_by(x, keys, mask, "tvn_pooled", ridge=0.1)
    z = np.concatenate([(x[keys == k] - x[keys == k].mean(0)) / x[keys == k].std(0) for k in "abc"])
    want = apply_centering(z, fit_centering(z, mask, "tvn", ridge=0.1), normalize=False)
    got = np.concatenate([apply_centering(x[keys == k], stats[k], normalize=False) for k in "abc"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["mad_robustize", "zca", "zca_cor", "tvn_pooled"])
def test_new_centerings_remove_a_batch_offset_and_per_feature_gain(method: str) -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 6))
    gain, offset = rng.uniform(0.2, 5.0, size=6), rng.normal(size=6) * 20
    x = np.concatenate([a, a * gain + offset])  # batch b: batch a's wells, each feature rescaled and shifted
    keys = np.repeat(["a", "b"], 80)
    mask = np.tile(np.arange(80) < 30, 2)
    stats = fit_centering_by(x, keys, mask, method)
    out = apply_centering_by(x, keys, stats)
    np.testing.assert_allclose(out[:80], out[80:], atol=2e-4)


def test_sphering_statistics_round_trip_with_their_epsilon(tmp_path: Path) -> None:
    x, mask = _batch(n=100, d=5)
    stats = fit_centering(x, mask, "zca_cor", epsilon=1e-3)
    back = CenteringStats.from_npz(stats.to_npz(tmp_path / "s.npz"))
    assert (back.method, back.epsilon) == ("zca_cor", 1e-3)
    np.testing.assert_allclose(apply_centering(x, back), apply_centering(x, stats))


def _mad_robustize_by(x: np.ndarray, keys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each batch robustized on its own reference wells (the per-batch step of zca), by hand."""
    out = np.empty_like(x)
    for k in np.unique(keys):
        rows = keys == k
        out[rows] = _mad_robustize(x[rows], x[rows & mask])
    return out


def test_pool_exclude_whitens_with_the_other_batches_residuals_alone() -> None:
    """The held-out / onboarded batch gets its own per-batch step, then the ZCA matrix of the others' residuals."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(240, 5)) @ rng.normal(size=(5, 5))
    keys = np.repeat(["a", "b", "c"], 80)
    x[keys == "c"] = x[keys == "c"] @ rng.normal(size=(5, 5)) + 3  # batch c: a covariance of its own
    mask = rng.random(240) < 0.5
    stats = fit_centering_by(x, keys, mask, "zca", epsilon=1e-6, pool_exclude=["c"])
    r = _mad_robustize_by(x, keys, mask)
    train = mask & (keys != "c")
    want = (r - r[train].mean(axis=0)) @ _cov_inv_sqrt(r[train], 1e-6)
    for k in "abc":
        got = apply_centering(x[keys == k], stats[k], normalize=False)
        np.testing.assert_allclose(got, want[keys == k], rtol=1e-4, atol=1e-4)
    # and not the whitening pooled over every batch, which c's own covariance pulls away
    pooled = fit_centering_by(x, keys, mask, "zca", epsilon=1e-6)
    rows = keys == "c"
    assert not np.allclose(apply_centering(x[rows], pooled["c"], normalize=False), want[rows], atol=1e-2)


def test_pool_exclude_of_every_batch_falls_back_to_pooling_all(caplog: pytest.LogCaptureFixture) -> None:
    x, mask = _batch(n=80, d=4)
    keys = np.repeat(["a"], 80)
    with caplog.at_level("WARNING", logger="phenoprint.index.centering"):
        alone = fit_centering_by(x, keys, mask, "zca", pool_exclude=["a"])
    assert "fitted on every batch's reference wells instead" in caplog.text
    pooled = fit_centering_by(x, keys, mask, "zca")
    np.testing.assert_allclose(apply_centering(x, alone["a"]), apply_centering(x, pooled["a"]))
    # methods without a pooled step ignore it
    plain = fit_centering_by(x, keys, mask, "center_scale", pool_exclude=["a"])
    np.testing.assert_allclose(plain["a"].scale, fit_centering(x, mask, "center_scale").scale)
