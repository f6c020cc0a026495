"""Batch centering fitted on an experiment's reference wells: none, center, center_scale, TVN, pycytominer's robust
standardization, and sphering (ZCA, ZCA-cor, TVN) fitted on the reference wells of all batches pooled.

Kept as one module although long: every centering shares one statistics type, its fit/apply pair and its
storage, and the pooled sphering is composed from the per-batch fits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

log = logging.getLogger(__name__)

#: The centering methods, each with what it does to a batch's wells: the one list the ``CenterMethod`` type (a test
#: checks they agree), the command line's choices and its help are taken from.
CENTER_METHOD_HELP: dict[str, str] = {
    "none": "none",
    "center": "center (subtract their mean)",
    "center_scale": "center_scale (standardize)",
    "tvn": "tvn (standardize, then whiten with their regularized covariance)",
    "mad_robustize": "mad_robustize (subtract their median, divide by 1.4826·MAD, as pycytominer does)",
    "zca": "zca (mad_robustize per batch, then ZCA sphering fitted on the reference wells of all batches pooled)",
    "zca_cor": "zca_cor (the same with ZCA-cor: sphering of their correlation)",
    "tvn_pooled": "tvn_pooled (standardize per batch, then TVN whose PCA is fitted on the reference wells pooled)",
}
CenterMethod = Literal["none", "center", "center_scale", "tvn", "mad_robustize", "zca", "zca_cor", "tvn_pooled"]
CENTER_METHODS: tuple[str, ...] = tuple(CENTER_METHOD_HELP)
Reference = Literal["controls", "all"]
REFERENCES: tuple[str, ...] = get_args(Reference)

#: TVN ridge λ as a fraction of the mean eigenvalue of the reference covariance (≈ 1 after standardizing), so
#: directions the reference wells barely vary in are amplified at most ~1/sqrt(ridge) times, not without bound.
DEFAULT_RIDGE = 0.1
#: A feature whose reference standard deviation is below this fraction of its magnitude is treated as constant
#: (e.g. a zero-padded profile column) and left unscaled: dividing by ~0 would let it dominate every distance.
_CONSTANT_FEATURE_RTOL = 1e-9
#: How many reference wells each method needs: a mean needs one well, a spread needs two (checked here per batch,
#: and by :func:`phenoprint.index.table_centering.fit_table_centering` for every batch of a table up front).
MIN_REFERENCE: dict[str, int] = {
    "none": 0,
    "center": 1,
    "center_scale": 2,
    "tvn": 2,
    "mad_robustize": 2,
    "zca": 2,
    "zca_cor": 2,
    "tvn_pooled": 2,
}
#: The sphering methods, each with the per-batch step applied before it: a batch is first centred on its own
#: reference wells (JUMP's recipe: per-plate ``mad_robustize``, then ``spherize`` on the negative controls; EFAAR's:
#: center-scale, then TVN), then whitened by one transform fitted on the residuals of every batch's reference wells
#: pooled (a few dozen controls per batch cannot estimate a covariance; all batches' together can).
POOLED_BASE: dict[str, str] = {"zca": "mad_robustize", "zca_cor": "mad_robustize", "tvn_pooled": "center_scale"}
#: Sphering ε added to the covariance's eigenvalues: pycytominer's ``spherize`` default (its features are scaled to
#: unit spread first, so the eigenvalues are O(1)).
DEFAULT_EPSILON = 1e-6
#: 1.4826·MAD estimates the standard deviation of normal data (pycytominer's ``mad_robustize``).
MAD_TO_SD = 1.4826


@dataclass(frozen=True, eq=False)
class CenteringStats:
    """Fitted statistics of one batch: ``y = iso·z + ((z @ U) · gains) @ Uᵀ`` with ``z = (x - mean) / scale``.

    The TVN whitening ``(Σ + λI)^(-1/2)`` is kept in this low-rank-plus-isotropic form (ZCA style, in the
    feature coordinates) rather than as a projection onto the batch's own principal axes: vectors of different
    experiments, each whitened with its own statistics, must stay in one shared coordinate system to be compared.

    Attributes:
        method: how the statistics were fitted (one of :data:`CENTER_METHODS`).
        mean: (d,) float64 mean of the reference wells (zeros for ``none``).
        scale: (d,) float64 standard deviation of the reference wells (ones unless ``center_scale``/``tvn``).
        components: (d, p) float64 orthonormal principal axes of the standardized reference (p = 0 unless ``tvn``).
        gains: (p,) float64 whitening gain of each component minus ``isotropic``.
        isotropic: gain applied to every direction (1 unless ``tvn``).
        n_reference: how many reference wells were used.
        ridge: the TVN ridge (fraction of the mean eigenvalue); 0 for the other methods.
        epsilon: the ZCA / ZCA-cor ε added to each eigenvalue; 0 for the other methods.
    """

    method: str
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    gains: np.ndarray
    isotropic: float
    n_reference: int
    ridge: float = 0.0
    epsilon: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_npz(self, path: str | Path) -> Path:
        """Write these statistics alone to an ``.npz`` file (no pickled objects)."""
        return save_centering(path, {"": self})

    @classmethod
    def from_npz(cls, path: str | Path) -> CenteringStats:
        """Read statistics written by :meth:`to_npz` (refuses a file holding several batches)."""
        stats = load_centering(path)
        if len(stats) != 1:
            raise ValueError(f"{path}: expected one set of centering statistics, found {len(stats)} ({sorted(stats)})")
        return next(iter(stats.values()))


def center_on_controls(x: np.ndarray, is_control: np.ndarray) -> np.ndarray:
    """The textbook batch correction: subtract the mean of the control wells from every well.

    Returns:
        (n, d) float64, not normalized (use :func:`fit_centering` + :func:`apply_centering` for the index).
    """
    x, mask = _check_x_mask(x, is_control, "is_control")
    if not mask.any():
        raise ValueError("is_control selects no row; expected at least one control well to centre on")
    return x - x[mask].mean(axis=0)


def fit_centering(
    x: np.ndarray,
    reference_mask: np.ndarray,
    method: str,
    *,
    pca_dim: int | None = None,
    ridge: float = DEFAULT_RIDGE,
    epsilon: float = DEFAULT_EPSILON,
) -> CenteringStats:
    """Fit one batch's centering statistics on its reference wells.

    Args:
        x: (n, d) raw vectors of one batch (experiment, or plate).
        reference_mask: (n,) booleans: the wells the statistics are fitted on (controls, or all wells).
        method: ``none`` (identity), ``center`` (subtract the reference mean), ``center_scale`` (standardize on
            the reference), ``tvn`` (standardize, then whiten with ``(Σ + λI)^(-1/2)`` of the reference),
            ``mad_robustize`` (median / 1.4826·MAD), or a sphering method of :data:`POOLED_BASE` (here fitted on
            this batch alone; :func:`fit_centering_by` pools every batch's reference wells).
        pca_dim: TVN: number of principal components of Σ estimated one by one; the remaining directions share
            their average variance (probabilistic PCA), since a few dozen control wells cannot estimate hundreds
            of eigenvalues. None: half the reference wells, at most d.
        ridge: TVN: λ as a fraction of the mean eigenvalue of Σ.
        epsilon: ZCA / ZCA-cor: ε added to each eigenvalue of the covariance.

    Raises:
        ValueError: bad shapes, unknown method, too few reference wells, or an invalid pca_dim/ridge/epsilon.
    """
    if method not in CENTER_METHODS:
        raise ValueError(f"method must be one of {', '.join(CENTER_METHODS)}; got {method!r}")
    x, mask = _check_x_mask(x, reference_mask, "reference_mask")
    _, d = x.shape
    ref = x[mask]
    n_ref = len(ref)
    if n_ref < MIN_REFERENCE[method]:
        raise ValueError(f"method {method!r} needs at least {MIN_REFERENCE[method]} reference well(s); got {n_ref}")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0; got {ridge}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0; got {epsilon}")
    if pca_dim is not None and not 1 <= pca_dim <= d:
        raise ValueError(f"pca_dim must be between 1 and the dimension {d}; got {pca_dim}")
    if method in POOLED_BASE:  # a pool of one batch
        base = fit_centering(ref, np.ones(n_ref, dtype=bool), POOLED_BASE[method])
        white = fit_sphering(_residuals(ref, base), method, pca_dim=pca_dim, ridge=ridge, epsilon=epsilon)
        return compose_sphering(base, white)
    identity = CenteringStats(method, np.zeros(d), np.ones(d), np.zeros((d, 0)), np.zeros(0), 1.0, n_ref, 0.0)
    if method == "none":
        return identity
    if method == "mad_robustize":
        median = np.median(ref, axis=0)
        mad = MAD_TO_SD * np.median(np.abs(ref - median), axis=0)
        # a feature constant in most wells has MAD 0: pycytominer divides by 1e-18 (it then dominates every distance);
        # its standard deviation is the robust-enough spread there, and 1 where that is ~0 too
        spread = np.where(_is_spread(mad, median), mad, _safe_scale(ref.std(axis=0), median))
        return CenteringStats(method, median, spread, np.zeros((d, 0)), np.zeros(0), 1.0, n_ref, 0.0)
    mean = ref.mean(axis=0)
    if method == "center":
        return CenteringStats(method, mean, np.ones(d), np.zeros((d, 0)), np.zeros(0), 1.0, n_ref, 0.0)
    scale = _safe_scale(ref.std(axis=0), mean)
    if method == "center_scale":
        return CenteringStats(method, mean, scale, np.zeros((d, 0)), np.zeros(0), 1.0, n_ref, 0.0)
    return _fit_tvn(ref, mean, scale, pca_dim, ridge)


def _is_spread(spread: np.ndarray, location: np.ndarray) -> np.ndarray:
    return np.asarray(spread > _CONSTANT_FEATURE_RTOL * np.maximum(1.0, np.abs(location)))


def _safe_scale(spread: np.ndarray, location: np.ndarray) -> np.ndarray:
    """The spread, with 1 for features that do not vary (left unscaled rather than divided by ~0)."""
    return np.where(_is_spread(spread, location), spread, 1.0)


def _residuals(x: np.ndarray, stats: CenteringStats) -> np.ndarray:
    """(x - mean) / scale in float64: the per-batch step of a sphering method, before the pooled whitening."""
    return np.asarray((x - stats.mean) / stats.scale, dtype=np.float64)


def fit_sphering(
    r: np.ndarray,
    method: str,
    *,
    pca_dim: int | None = None,
    ridge: float = DEFAULT_RIDGE,
    epsilon: float = DEFAULT_EPSILON,
) -> CenteringStats:
    """The whitening of a sphering method, fitted on residuals ``r`` (reference wells already centred per batch).

    ``zca``: ``W = E (Λ + εI)^(-1/2) Eᵀ`` of the covariance ``Σ = E Λ Eᵀ`` (ddof 1, as pycytominer's ``Spherize``).
    ``zca_cor``: ``W = G (Θ + εI)^(-1/2) Gᵀ V^(-1/2)`` with ``V`` the variances and ``G Θ Gᵀ`` the correlation
    (Kessy et al. 2016, "Optimal whitening and decorrelation"). With fewer wells than features, the directions the
    wells do not span get the gain of the smallest estimated eigenvalue (as pycytominer fills the missing singular
    values), not ε^(-1/2), which would let unmeasured directions dominate every distance. ``tvn_pooled``: TVN
    (:func:`fit_centering`'s ``tvn``) of the pooled residuals.

    Returns:
        Statistics ``y = iso·z + ((z @ U)·gains) @ Uᵀ`` with ``z = (r - mean) / scale`` (to compose with the per-batch
        step by :func:`compose_sphering`).
    """
    if method not in POOLED_BASE:
        raise ValueError(f"method must be one of {', '.join(POOLED_BASE)}; got {method!r}")
    r = _check_x(r)
    n, d = r.shape
    if n < 2:
        raise ValueError(f"sphering needs at least 2 reference wells; got {n}")
    mean = r.mean(axis=0)
    scale = _safe_scale(r.std(axis=0), mean) if method != "zca" else np.ones(d)
    if method == "tvn_pooled":
        tvn = _fit_tvn(r, mean, scale, pca_dim, ridge)
        return replace(tvn, method=method)
    z = (r - mean) / scale
    eig, axes = _principal_axes(z)
    eig = eig * (n / (n - 1))  # the unbiased covariance, as np.cov and pycytominer
    if not len(eig):  # every reference well alike: nothing to whiten
        return CenteringStats(method, mean, scale, np.zeros((d, 0)), np.zeros(0), 1.0, n, 0.0, float(epsilon))
    iso = 1.0 / np.sqrt(eig[-1] + epsilon)
    gains = 1.0 / np.sqrt(eig + epsilon) - iso
    return CenteringStats(method, mean, scale, axes.copy(), gains, float(iso), n, 0.0, float(epsilon))


def compose_sphering(base: CenteringStats, white: CenteringStats) -> CenteringStats:
    """One batch's statistics: its own per-batch step, then the (pooled) whitening.

    ``((x - m_b) / s_b - μ) / v = (x - (m_b + s_b·μ)) / (s_b·v)``, so the composition is again a
    :class:`CenteringStats`, stored and applied like every other centering.
    """
    return CenteringStats(
        white.method,
        base.mean + base.scale * white.mean,
        base.scale * white.scale,
        white.components,
        white.gains,
        white.isotropic,
        base.n_reference,
        white.ridge,
        white.epsilon,
    )


def _fit_tvn(ref: np.ndarray, mean: np.ndarray, scale: np.ndarray, pca_dim: int | None, ridge: float) -> CenteringStats:
    n_ref, d = ref.shape
    z = (ref - mean) / scale
    eig, axes = _principal_axes(z)
    p = pca_dim if pca_dim is not None else max(1, min(d, n_ref // 2))
    p = min(p, len(eig))
    total = float(np.trace(z.T @ z) / n_ref) if n_ref > d else float((z * z).sum() / n_ref)
    lam = ridge * total / d if total > 0 else ridge
    # average variance of the directions not estimated one by one (their sample eigenvalues sum to the rest)
    rest = max(total - float(eig[:p].sum()), 0.0) / (d - p) if d > p else 0.0
    isotropic = 1.0 / np.sqrt(rest + lam)
    gains = 1.0 / np.sqrt(eig[:p] + lam) - isotropic
    return CenteringStats("tvn", mean, scale, axes[:, :p].copy(), gains, float(isotropic), n_ref, float(ridge))


def _principal_axes(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, > 0) and unit eigenvectors (d, r) of Σ = zᵀz / n.

    With fewer wells than features the n x n Gram matrix gives the same non-zero spectrum far more cheaply than
    the d x d covariance (and than LAPACK's SVD, which is slow on such thin matrices).
    """
    n, d = z.shape
    if n <= d:
        w, u = np.linalg.eigh(z @ z.T / n)
        order = np.argsort(w)[::-1]
        w, u = w[order], u[:, order]
        keep = w > w[0] * 1e-10 if w[0] > 0 else np.zeros(len(w), dtype=bool)
        w, u = w[keep], u[:, keep]
        axes = (z.T @ u) / np.sqrt(w * n)
        return w, axes
    w, v = np.linalg.eigh(z.T @ z / n)
    order = np.argsort(w)[::-1]
    w, v = np.clip(w[order], 0.0, None), v[:, order]
    return w, v


def apply_centering(x: np.ndarray, stats: CenteringStats, *, normalize: bool = True) -> np.ndarray:
    """Centre (and scale, whiten) vectors with fitted statistics, then L2-normalize them for cosine search.

    Args:
        x: (n, d) raw vectors of the batch the statistics were fitted on.
        stats: from :func:`fit_centering`.
        normalize: L2-normalize the rows (turn off only to inspect the linear transform itself).

    Returns:
        (n, d) float32; rows of zero norm stay zero.
    """
    x = _check_x(x, dtype=None)
    if x.shape[1] != stats.dim:
        raise ValueError(f"x has dimension {x.shape[1]} but the centering statistics were fitted on {stats.dim}")
    # subtract in float64 (a large offset over a small spread would cancel badly in float32), whiten in float32
    z = ((x - stats.mean) * (1.0 / stats.scale)).astype(np.float32)
    y = z * np.float32(stats.isotropic)
    if stats.components.shape[1]:
        u = stats.components.astype(np.float32)
        y += ((z @ u) * stats.gains.astype(np.float32)) @ u.T
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64)).astype(np.float32)
        y /= np.where(norms > 0, norms, np.float32(1.0))[:, None]
    return y


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def fit_centering_by(
    x: np.ndarray,
    keys: np.ndarray,
    reference_mask: np.ndarray,
    method: str,
    *,
    pca_dim: int | None = None,
    ridge: float = DEFAULT_RIDGE,
    epsilon: float = DEFAULT_EPSILON,
    pool_exclude: Collection[str] = (),
) -> dict[str, CenteringStats]:
    """Fit one set of statistics per batch key (e.g. ``"HUVEC-01"`` or ``"HUVEC-01/3"`` for per-plate fitting).

    A sphering method (:data:`POOLED_BASE`) fits its per-batch step on each batch's reference wells, then one
    whitening on their residuals pooled, composed into each batch's statistics.

    Args:
        pool_exclude: batch keys whose reference wells stay out of the pooled whitening (the batch being onboarded
            or held out: the whitening is fitted on the training batches, as the field's recipe has it); they still
            get their own per-batch step, then the whitening fitted on the others. Ignored by the other methods.
            When it would leave fewer than two reference wells to pool, every batch is pooled (logged).

    Raises:
        ValueError: a batch has too few reference wells (the message names it).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, d); got shape {x.shape}")
    mask = _check_mask(reference_mask, len(x), "reference_mask")
    names, codes = _key_codes(keys, len(x))
    if method in POOLED_BASE and len(x):
        need = MIN_REFERENCE[method]
        base = fit_centering_by(x, keys, reference_mask, POOLED_BASE[method])
        for key in names:
            if base[key].n_reference < need:
                raise ValueError(f"batch {key}: method {method!r} needs at least {need} reference well(s)")
        excluded = set(pool_exclude)
        pooled = [i for i, key in enumerate(names) if key not in excluded]
        ref = np.flatnonzero(mask & np.isin(codes, pooled))
        if len(ref) < need:
            if len(pooled) < len(names):
                log.warning(
                    "%s: the batches other than %s have %d reference well(s), fewer than the %d the pooled "
                    "whitening needs; it is fitted on every batch's reference wells instead",
                    method,
                    ", ".join(sorted(set(names) - {names[i] for i in pooled})),
                    len(ref),
                    need,
                )
            ref = np.flatnonzero(mask)
        r = np.empty((len(ref), x.shape[1]), dtype=np.float64)
        for i, key in enumerate(names):
            rows = codes[ref] == i
            r[rows] = _residuals(x[ref[rows]], base[key])
        white = fit_sphering(r, method, pca_dim=pca_dim, ridge=ridge, epsilon=epsilon)
        return {key: compose_sphering(base[key], white) for key in names}
    out: dict[str, CenteringStats] = {}
    for i, key in enumerate(names):
        ref = np.flatnonzero((codes == i) & mask)  # only the reference wells are needed to fit
        try:
            out[key] = fit_centering(
                x[ref], np.ones(len(ref), dtype=bool), method, pca_dim=pca_dim, ridge=ridge, epsilon=epsilon
            )
        except ValueError as exc:
            raise ValueError(f"batch {key}: {exc}") from exc
    return out


def apply_centering_by(x: np.ndarray, keys: np.ndarray, stats: Mapping[str, CenteringStats]) -> np.ndarray:
    """Centre each row with the statistics of its batch key; returns (n, d) L2-normalized float32."""
    x = _check_x(x, dtype=np.float32)
    names, codes = _key_codes(keys, len(x))
    missing = sorted(set(names) - set(stats))
    if missing:
        raise ValueError(f"no centering statistics for batch(es) {', '.join(missing[:5])}; fitted: {sorted(stats)[:5]}")
    out = np.empty(x.shape, dtype=np.float32)
    for i, key in enumerate(names):
        rows = np.flatnonzero(codes == i)
        out[rows] = apply_centering(x[rows], stats[key])
    return out


def _key_codes(keys: np.ndarray, n: int) -> tuple[list[str], np.ndarray]:
    """The distinct batch keys (as str) and each row's index into them."""
    keys = np.asarray(keys)
    if keys.shape != (n,):
        raise ValueError(f"keys must have shape ({n},); got {keys.shape}")
    names, codes = np.unique(keys.astype(str), return_inverse=True)
    return [str(k) for k in names], codes


def save_centering(path: str | Path, stats: Mapping[str, CenteringStats]) -> Path:
    """Write several batches' statistics to one ``.npz`` (plain arrays only, readable without pickle)."""
    path = Path(path)
    keys = list(stats)
    arrays: dict[str, np.ndarray] = {
        "keys": np.array(keys, dtype=str),
        "methods": np.array([stats[k].method for k in keys], dtype=str),
        "scalars": np.array(
            [[stats[k].isotropic, stats[k].n_reference, stats[k].ridge, stats[k].epsilon] for k in keys], dtype=float
        ).reshape(len(keys), 4),
    }
    for i, k in enumerate(keys):
        s = stats[k]
        arrays[f"{i}_mean"] = s.mean
        arrays[f"{i}_scale"] = s.scale
        arrays[f"{i}_components"] = s.components
        arrays[f"{i}_gains"] = s.gains
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def load_centering(path: str | Path) -> dict[str, CenteringStats]:
    """Read statistics written by :func:`save_centering` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        keys = [str(k) for k in data["keys"]]
        methods = [str(m) for m in data["methods"]]
        scalars = data["scalars"].reshape(len(keys), -1)
        if scalars.shape[1] == 3:  # written before the sphering methods: no epsilon
            scalars = np.pad(scalars, ((0, 0), (0, 1)))
        out = {}
        for i, k in enumerate(keys):
            out[k] = CenteringStats(
                methods[i],
                data[f"{i}_mean"],
                data[f"{i}_scale"],
                data[f"{i}_components"],
                data[f"{i}_gains"],
                float(scalars[i, 0]),
                int(scalars[i, 1]),
                float(scalars[i, 2]),
                float(scalars[i, 3]),
            )
    return out


def _check_x(x: np.ndarray, dtype: type | None = np.float64) -> np.ndarray:
    """A 2-D numeric array, converted to ``dtype`` (None: left as it is)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be a 2-D array (n, d) with d > 0; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"x must be numeric; got dtype {x.dtype}")
    return x if dtype is None else x.astype(dtype, copy=False)


def _check_mask(mask: np.ndarray, n: int, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != (n,) or m.dtype != bool:
        raise ValueError(f"{name} must be a boolean array of shape ({n},); got {m.dtype} of shape {m.shape}")
    return m


def _check_x_mask(x: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = _check_x(x)
    return x, _check_mask(mask, len(x), name)
