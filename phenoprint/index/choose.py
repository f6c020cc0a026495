"""``--center auto``: score every (centering x mode) on a batch's own labelled controls and keep the best.

Kept as one module although long: the two ways of ranking candidates (on the controls, on the training
experiments' treatments) share the candidates, the selection record and its fallback.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError
from phenoprint.index.assign import assign_experiment
from phenoprint.index.centering import CENTER_METHODS, fit_centering_by
from phenoprint.index.classify import MODES, classify, sirna_scores
from phenoprint.index.table_centering import ENSEMBLE, ensemble_views, view_name

log = logging.getLogger(__name__)

AUTO = "auto"
#: (centering, per plate) candidates, simplest first: exact ties go to the earlier one. ``none`` per plate is ``none``.
CANDIDATES: tuple[tuple[str, bool], ...] = (
    ("none", False),
    *((method, per_plate) for method in CENTER_METHODS if method != "none" for per_plate in (False, True)),
)
#: The candidates ranked on a batch's controls (embeddings): the centerings of the RxRx1 recipe. A few dozen control
#: wells are a small sample, and each added candidate raises the chance that a lucky one leads; the profile
#: centerings (robust standardization, pooled sphering) are ranked where the training batches' treatments judge.
CONTROL_CANDIDATES: tuple[tuple[str, bool], ...] = tuple(
    c for c in CANDIDATES if c[0] in ("none", "center", "center_scale", "tvn")
)
#: Modes in order of preference on exact ties (centroid needs no FAISS search).
MODE_PREFERENCE: tuple[str, ...] = ("centroid", "knn")
#: The default: used when a batch has no labelled controls to score on, and when it ties the leader on assignment and
#: top-1 (centring each batch on its controls is the field's standard batch correction).
FALLBACK = ("center", False, "centroid")
#: How candidates are ranked (recorded in every manifest's ``selection``).
CRITERION = (
    "assigned_top1, then top1, then map, on the batch's labelled controls (leave-plate-out, each control query left "
    "out of its own statistics); a tie with the default (center + centroid) on assigned_top1 and top1 goes to it; "
    "profiles (no model fingerprint): not ranked, the ensemble of every centering with cosine 1-NN"
)
#: A lead under this many standard errors of the paired difference is reported as within noise.
NOISE_SE = 2.0


@dataclass(frozen=True)
class Selection:
    """What ``auto`` chose for one experiment, and the evidence.

    Attributes:
        center: the chosen centering.
        per_plate: whether it is fitted per plate.
        mode: the chosen classification mode.
        table: one row per candidate: ``center``, ``per_plate``, ``mode``, ``wells`` (labelled controls scored),
            ``top1`` (per-well), ``assigned_top1`` (each control once per plate), ``map`` (replicate mAP) and ``mrr``
            (mean reciprocal rank of the control's own class; reported, not ranked on), best first.
        margin: how much the choice leads the runner-up on the criterion (assigned top-1).
        noise: the standard error of that difference (paired, from the wells the two disagree on).
        within_noise: the margin is under :data:`NOISE_SE` standard errors (the choice is not clearly better).
        reason: the choice in words.
    """

    center: str
    per_plate: bool
    mode: str
    table: list[dict[str, Any]]
    margin: float
    noise: float
    within_noise: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "center": self.center,
            "per_plate": self.per_plate,
            "mode": self.mode,
            "criterion": CRITERION,
            "margin": None if math.isnan(self.margin) else round(self.margin, 4),
            "noise": None if math.isnan(self.noise) else round(self.noise, 4),
            "within_noise": self.within_noise,
            "reason": self.reason,
            "table": self.table,
        }


def wants_auto(config: Any) -> bool:
    """Whether an :class:`phenoprint.index.build.IndexConfig` asks for the centering or the mode to be chosen."""
    return bool(config.center == AUTO or config.mode == AUTO)


def choose_config(
    table: EmbeddingTable, experiment: str, config: Any, *, exclude_same_well: bool = False
) -> tuple[Any, Selection]:
    """Resolve ``auto`` in an IndexConfig from the target's labelled control wells.

    Every candidate (:data:`CANDIDATES` x :data:`MODES`, or only those the config leaves open) is scored
    leave-this-batch-out: the target's labelled controls are the queries, the other experiments' labelled controls
    in scope (and the target's controls on its other plates: leave-plate-out) the reference, each experiment centred
    with its own statistics, fitted as the index would fit them (the target's on its other plates when fitted per
    experiment). Ranked by per-plate assignment accuracy (each control once per plate, as the plate design holds
    them), then per-well top-1, then the controls' replicate mAP; a tie with the default (:data:`FALLBACK`) on the first
    two goes to it (:func:`_default_unless_beaten`). With ``--center-on controls`` a control query is left out of the
    statistics it is centred with, as a treatment is (:func:`_centre_left_out`).

    Args:
        table: a well table of the target and the reference experiments (already restricted to the index's scope).
        experiment: the target.
        config: the requested IndexConfig (``center`` and/or ``mode`` ``auto``).
        exclude_same_well: where candidates are ranked on the training experiments' treatments, entries at the query's
            well position are not neighbours (as ``evaluate --exclude-same-well`` scores them).

    Returns:
        The resolved config and the evidence.
    """
    table = table.aggregate_sites()
    if table.fingerprint is None:  # profiles no model was trained on: average the centerings, do not pick one
        return _profiles_choice(experiment, config)
    centers = CANDIDATES if config.center == AUTO else ((config.center, bool(config.per_plate)),)
    modes = MODE_PREFERENCE if config.mode == AUTO else (config.mode,)
    control_classes = table.meta.loc[table.control_mask() & table.labelled_mask(), "Metadata_sirna_id"].nunique()
    # One control class (e.g. DMSO) is named right by every candidate: no evidence there. The training experiments'
    # own treatments are then the judge (their embeddings were learned, so they flatter the model, but they rank
    # centerings where the controls cannot).
    if control_classes < 2:
        on_training = _choose_on_training(
            table, experiment, centers, modes, config, int(control_classes), exclude_same_well
        )
        if on_training is not None:
            return on_training
    if config.center == AUTO:
        centers = CONTROL_CANDIDATES
    rows = _score_all(table, experiment, centers, modes, config) if control_classes >= 2 else []
    if not rows:
        return _fallback(experiment, config)
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["assigned_top1"], -rows[i]["top1"], -rows[i]["map"], i))
    order = _default_unless_beaten(rows, order, config)
    best = rows[order[0]]
    margin, noise = float("nan"), float("nan")
    if len(order) > 1:
        second = rows[order[1]]
        margin = best["assigned_top1"] - second["assigned_top1"]
        a, b = best["_right"], second["_right"]
        noise = math.sqrt(float((a != b).sum())) / len(a) if len(a) else float("nan")
    within = len(order) > 1 and not margin > NOISE_SE * noise
    table_out = [{k: v for k, v in rows[i].items() if not k.startswith("_")} for i in order]
    chosen = _name(best["center"], best["per_plate"], best["mode"])
    reason = (
        f"{chosen}: assigned top-1 {best['assigned_top1']:.3f}, per-well top-1 {best['top1']:.3f}, replicate mAP "
        f"{best['map']:.3f} on {best['wells']} labelled control wells of {experiment}"
    )
    if len(order) > 1:
        runner = table_out[1]
        reason += (
            f"; runner-up {_name(runner['center'], runner['per_plate'], runner['mode'])} "
            f"{runner['assigned_top1']:.3f}/{runner['top1']:.3f}/{runner['map']:.3f}"
        )
    if within:
        log.warning(
            "%s: the choice of centering/mode is within noise (lead %.3f, standard error %.3f): %s",
            experiment,
            margin,
            noise,
            reason,
        )
    else:
        log.info("%s: chose %s", experiment, reason)
    sel = Selection(best["center"], best["per_plate"], best["mode"], table_out, margin, noise, within, reason)
    resolved = replace(config, center=best["center"], per_plate=best["per_plate"], mode=best["mode"])
    return resolved, sel


#: ``auto`` on profiles (no model fingerprint): the ensemble of every centering (:data:`ENSEMBLE`), cosine 1-NN.
PROFILES_CHOICE = (ENSEMBLE, True, "knn", 1)


def _profiles_choice(experiment: str, config: Any) -> tuple[Any, Selection]:
    """``auto`` on vectors no model was trained on (CellProfiler / pycytominer profiles): the ensemble of every
    centering (the mean cosine over all of them, per experiment and per plate; :func:`ensemble_views`), and cosine
    1-NN, the field's profile classifier, where the mode is left to ``auto``.

    Ranking the candidates was tried and measured on the real profile sets (scripts/bench_profiles.py): the
    training batches' treatments (cross-validation, one-standard-error rule) and a DMSO-only or four-class control
    set could not tell candidates apart whose differences are within noise, and their picks lost to pycytominer's
    per-plate standardization on 7 of 10 tasks, while the ensemble beat both pycytominer baselines on all 10.
    Nearest centroid loses on classes of several phenotypes (a mechanism of action held by several compounds)."""
    center, per_plate = (ENSEMBLE, True) if config.center == AUTO else (config.center, bool(config.per_plate))
    mode, n_neighbors = ("knn", 1) if config.mode == AUTO else (config.mode, config.n_neighbors)
    views = [view_name(m, p) for m, p in ensemble_views(config.reference)]
    what = f"{center}{' per plate' if per_plate and center != 'none' else ''}"
    if center == ENSEMBLE:
        what = f"the ensemble of {len(views)} centerings (mean cosine over {', '.join(views)})"
    reason = (
        f"{experiment} holds profiles no model was trained on: {what}, "
        f"{'cosine 1-NN' if (mode, n_neighbors) == ('knn', 1) else mode}; not ranked (on profiles, no ranking of "
        f"single centerings held on real data: see the README)"
    )
    log.info("%s", reason)
    sel = Selection(center, per_plate, mode, [], float("nan"), float("nan"), False, reason)
    return replace(config, center=center, per_plate=per_plate, mode=mode, n_neighbors=n_neighbors), sel


def _fallback(experiment: str, config: Any) -> tuple[Any, Selection]:
    """The default (:data:`FALLBACK`, or what the config fixes), where nothing could be scored."""
    center, per_plate, mode = (
        (FALLBACK[0], FALLBACK[1]) if config.center == AUTO else (config.center, config.per_plate)
    ) + ((FALLBACK[2] if config.mode == AUTO else config.mode),)
    reason = (
        f"{experiment} has no labelled control wells on which to compare choices (or no other experiment has): "
        f"using {_name(center, per_plate, mode)}"
    )
    log.warning("%s", reason)
    sel = Selection(center, per_plate, mode, [], float("nan"), float("nan"), True, reason)
    return replace(config, center=center, per_plate=per_plate, mode=mode), sel


def _choose_on_training(
    table: EmbeddingTable,
    experiment: str,
    centers: tuple[tuple[str, bool], ...],
    modes: tuple[str, ...],
    config: Any,
    control_classes: int,
    exclude_same_well: bool = False,
) -> tuple[Any, Selection] | None:
    """Where the target's controls cannot rank the candidates for a model's embeddings (no labelled controls, or one
    class of them), rank them by cross-validation on the training experiments instead:
    each of them held out in turn, its labelled treatments named against an index of the others (and its own
    controls), as :func:`phenoprint.index.evaluate.evaluate` does. kNN is scored with the configured neighbours and
    as 1-NN (the field's usual profile classifier). The target's own treatments are never used; None when fewer than
    two training experiments hold labelled treatments, or none of their treatments is held by another (VarChAMP's
    batches of different alleles): the controls then judge.

    The one-standard-error rule of cross-validation (Hastie, Tibshirani & Friedman, *The Elements of Statistical
    Learning*, 7.10) picks among them: the simplest candidate whose top-1 is within one standard error
    (``sqrt(p(1-p)/n)`` of the leader's) of the leader's, simplest meaning earliest in :data:`CANDIDATES`, then
    centroid, kNN, 1-NN. A handful of training experiments is little evidence, and among a dozen centerings the
    leader is partly the luckiest. Per plate goes before per experiment: it is the field's standard (pycytominer and
    the JUMP recipe normalize each plate on its own controls), and training batches of one plate each cannot tell
    the two apart."""
    variants: list[tuple[str, int | None]] = [(m, None) for m in modes]
    if "knn" in modes and config.n_neighbors != 1:
        variants.append(("knn", 1))
    rows = _training_rows(table, experiment, centers, variants, config, exclude_same_well)
    held = {e for r in rows for e in r.pop("_held", [])}
    if not rows or not rows[0]["wells"]:  # no training well's label is held by another training experiment
        return None
    leader = max(rows, key=lambda r: r["training_top1"])
    p, n = leader["training_top1"], leader["wells"]
    se = math.sqrt(p * (1 - p) / n) if n else 0.0
    methods = list(dict.fromkeys(c for c, _ in centers))
    variant = {v: i for i, v in enumerate(variants)}

    def simplicity(r: dict[str, Any]) -> tuple[int, bool, int]:
        return methods.index(r["center"]), not r["per_plate"], variant[r["mode"], r["n_neighbors"]]

    best = min((r for r in rows if r["training_top1"] >= p - se - 1e-12), key=simplicity)
    order = sorted(range(len(rows)), key=lambda i: (rows[i] is not best, -rows[i]["training_top1"], i))
    runner = rows[order[1]] if len(order) > 1 else None
    margin = best["training_top1"] - runner["training_top1"] if runner else float("nan")
    why = {0: "no labelled control wells"}.get(control_classes, "controls of a single class")
    knn = f" ({best['n_neighbors']}-NN)" if best["n_neighbors"] else ""
    reason = (
        f"{_name(best['center'], best['per_plate'], best['mode'])}{knn}: top-1 {best['training_top1']:.3f} on "
        f"{best['wells']} labelled treatment wells of {len(held)} training experiments (each held out in turn), "
        f"as {experiment} has {why}; the simplest within one standard error ({se:.3f}) of the "
        f"best ({_name(leader['center'], leader['per_plate'], leader['mode'])} {p:.3f})"
    )
    if runner:
        reason += (
            f"; runner-up {_name(runner['center'], runner['per_plate'], runner['mode'])} {runner['training_top1']:.3f}"
        )
    log.info("%s: chose %s", experiment, reason)
    within = runner is not None and not margin > se
    table_out = [{k: v for k, v in rows[i].items() if not k.startswith("_")} for i in order]
    sel = Selection(best["center"], best["per_plate"], best["mode"], table_out, margin, float("nan"), within, reason)
    resolved = replace(config, center=best["center"], per_plate=best["per_plate"], mode=best["mode"])
    if best["n_neighbors"] is not None:
        resolved = replace(resolved, n_neighbors=best["n_neighbors"])
    return resolved, sel


def _training_rows(
    table: EmbeddingTable,
    experiment: str,
    centers: tuple[tuple[str, bool], ...],
    variants: list[tuple[str, int | None]],
    config: Any,
    exclude_same_well: bool,
) -> list[dict[str, Any]]:
    """One row per (centering, mode, neighbours): top-1 of the training experiments' reachable labelled treatments,
    each experiment held out in turn (empty: fewer than two of them hold labelled treatments)."""
    from phenoprint.index.build import assemble_index
    from phenoprint.index.table_centering import center_table, fit_configured

    others = table.subset(~table.experiment_mask(experiment))
    treated = others.labelled_mask() & (others.meta["Metadata_well_type"] == "treatment").to_numpy()
    exps = others.meta["Metadata_experiment"].to_numpy(dtype=str)
    held = sorted(set(exps[treated]))
    if len(held) < 2:
        return []
    quiet = replace(config, center="none", mode="centroid", open_set_quantile=0.0, kind="flat")
    labels = others.labels()
    rows: list[dict[str, Any]] = []
    for center, per_plate in centers:
        try:
            stats = fit_configured(others, config, center=center, per_plate=per_plate)
        except (ValueError, EmbeddingTableError) as exc:
            log.debug("candidate %s skipped: %s", _name(center, per_plate, "-"), exc)
            continue
        centred = center_table(others, stats, per_plate)
        right: dict[tuple[str, int | None], list[np.ndarray]] = {v: [] for v in variants}
        for exp in held:
            q = treated & (exps == exp)
            ic = replace(quiet, center=center, per_plate=per_plate)
            index = assemble_index(others, centred, stats, exp, ic, table.fingerprint, plate_groups=None)
            # only wells whose label the others hold can be named: batches of other treatments say nothing
            q = q & np.isin(labels, index.sirna_ids)
            wells = others.meta.loc[q, "Metadata_well"].to_numpy(dtype=str) if exclude_same_well else None
            for mode, n_nb in variants:
                cls = classify(centred[q], index, k=1, mode=mode, n_neighbors=n_nb, exclude_wells=wells)
                right[mode, n_nb].append(cls.top1 == labels[q])
        for (mode, n_nb), r in right.items():
            hits = np.concatenate(r)
            top1 = float(hits.mean()) if len(hits) else 0.0
            row = {"center": center, "per_plate": per_plate and center != "none", "mode": mode, "n_neighbors": n_nb}
            rows.append({**row, "wells": len(hits), "training_top1": round(top1, 4), "_held": held, "_hits": hits})
    return rows


def _default_unless_beaten(rows: list[dict[str, Any]], order: list[int], config: Any) -> list[int]:
    """The ranking with the default (:data:`FALLBACK`, the field's standard: centre each batch on its controls,
    nearest centroid) moved first when it ties the leader on what the batch is used for: assignment and per-well top-1.
    Controls are few and their phenotypes strong, so they often score many candidates exactly alike there (all 1.0 on
    the demo's batches and on CDoT's DMSO-only controls); the ranking then holds no evidence about treatments. The
    controls' replicate mAP still orders the other candidates, but does not displace the default: near its ceiling,
    it rewards what fits the controls best (on the demo, HUVEC-04's controls gave center_scale per plate 0.999 against
    0.990 for the default, and its treatments lost 0.046, 0.943 against 0.955 over the four held-out batches).

    A rule that also kept the default when the leader won on assignment by less than :data:`NOISE_SE` standard errors
    was tried: it lost on the real profile sets (VarChAMP 0.263 to 0.176; scripts/check_auto_profiles.py), so a lead
    on the controls' classification is trusted however small."""
    center, per_plate, mode = FALLBACK
    if config.center != AUTO:
        center, per_plate = config.center, bool(config.per_plate)
    if config.mode != AUTO:
        mode = config.mode
    wanted = (center, per_plate and center != "none", mode)
    default = [i for i in order if (rows[i]["center"], rows[i]["per_plate"], rows[i]["mode"]) == wanted]
    if not default or default[0] == order[0]:
        return order

    leader, fallback = rows[order[0]], rows[default[0]]
    if (leader["assigned_top1"], leader["top1"]) != (fallback["assigned_top1"], fallback["top1"]):
        return order
    return [default[0], *(i for i in order if i != default[0])]


def _name(center: str, per_plate: bool, mode: str) -> str:
    return f"{center}{' per plate' if per_plate and center != 'none' else ''} + {mode}"


def _score_all(
    table: EmbeddingTable,
    experiment: str,
    centers: tuple[tuple[str, bool], ...],
    modes: tuple[str, ...],
    config: Any,
) -> list[dict[str, Any]]:
    """One row per (centering, mode) with its scores on the target's controls (empty: nothing to score on)."""
    from phenoprint.index.build import assemble_index
    from phenoprint.index.table_centering import batch_keys, center_table, fit_configured, reference_mask

    target = table.experiment_mask(experiment)
    labelled_controls = table.control_mask() & table.labelled_mask()
    queries = target & labelled_controls
    if not queries.any() or not (labelled_controls & ~target).any():
        return []
    plates = table.meta["Metadata_plate"].to_numpy(dtype=np.int64)
    labels = table.labels()
    query_plates = sorted(set(plates[queries].tolist()))
    # only labelled controls are indexed: the others' treatments stay (a centering fitted on all wells uses them)
    meta = table.meta.copy()
    meta.loc[~target & ~labelled_controls, "Metadata_sirna_id"] = None
    base = EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint, dict(table.info))
    others = base.subset(~target)
    ref = reference_mask(base, config.reference)
    quiet = replace(config, center="none", mode="centroid", open_set_quantile=0.0, kind="flat")
    rows: list[dict[str, Any]] = []
    for center, per_plate in centers:
        ic = replace(quiet, center=center, per_plate=per_plate)
        right: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        right_assigned: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        rr: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        ap: list[np.ndarray] = []
        try:
            other_stats = fit_configured(others, config, center=center, per_plate=per_plate)
            for p in query_plates:
                on_p = queries & (plates == p)
                # leave plate p out: its controls are the queries, so they are neither entries nor in the target's fit
                hidden = on_p if len(query_plates) > 1 else queries
                # per plate, a plate's statistics come from its own reference wells, as in the index
                fit_rows = ref & target & (~on_p if not per_plate and len(query_plates) > 1 else True)
                keys = batch_keys(base.meta, per_plate)
                stats = {
                    **other_stats,
                    **fit_centering_by(
                        base.features[target],
                        keys[target],
                        fit_rows[target],
                        center,
                        pca_dim=config.pca_dim,
                        ridge=config.ridge,
                        epsilon=config.epsilon,
                    ),
                }
                sub_meta = base.meta.copy()
                sub_meta.loc[hidden, "Metadata_sirna_id"] = None
                sub = EmbeddingTable(sub_meta, base.features, base.feature_names, base.fingerprint, dict(base.info))
                centred = center_table(sub, stats, per_plate)
                if config.reference == "controls":  # a treatment is never in its own plate's fit: nor is a query
                    _centre_left_out(
                        centred, base.features, on_p, fit_rows & (plates == p if per_plate else True), center, config
                    )
                index = assemble_index(sub, centred, stats, experiment, ic, table.fingerprint, plate_groups=None)
                x, y = centred[on_p], labels[on_p]
                ap.append(_control_ap(x, y, index))
                for mode in modes:
                    cls = classify(x, index, k=1, mode=mode)
                    sc = sirna_scores(x, index, mode)
                    a = assign_experiment(sc.scores, sc.sirna_ids, np.zeros(len(x), dtype=np.int64))
                    right[mode].append(cls.top1 == y)
                    right_assigned[mode].append(a.sirna_ids == y)
                    rr[mode].append(_reciprocal_rank(sc.scores, sc.sirna_ids, y))
        except (ValueError, EmbeddingTableError) as exc:  # e.g. too few reference wells for this centering
            log.debug("candidate %s skipped: %s", _name(center, per_plate, "-"), exc)
            continue
        rows += [_candidate_row(center, per_plate, m, right[m], right_assigned[m], rr[m], ap) for m in modes]
    return rows


def _centre_left_out(
    centred: np.ndarray, x: np.ndarray, queries: np.ndarray, fit_rows: np.ndarray, center: str, config: Any
) -> None:
    """Re-centre (in place) each query well that is one of the reference wells its statistics were fitted on, with
    statistics fitted on the others (leave-one-out).

    With ``--center-on controls``, a new batch's treatments are never among the wells their plate's (or
    experiment's) statistics come from, but the control queries are: scored with their own contribution to the
    mean and scale, few per plate, centerings fitted on fewer wells (per plate) looked better than they are."""
    from phenoprint.index.centering import apply_centering, fit_centering

    for i in np.flatnonzero(queries & fit_rows):
        others = fit_rows.copy()
        others[i] = False
        stats = fit_centering(
            x[others],
            np.ones(int(others.sum()), dtype=bool),
            center,
            pca_dim=config.pca_dim,
            ridge=config.ridge,
            epsilon=config.epsilon,
        )
        centred[i] = apply_centering(x[i : i + 1], stats)[0]


def _candidate_row(
    center: str,
    per_plate: bool,
    mode: str,
    right: list[np.ndarray],
    right_assigned: list[np.ndarray],
    rr: list[np.ndarray],
    ap: list[np.ndarray],
) -> dict[str, Any]:
    """One candidate's row of the selection table, from its per-plate results."""
    r, ra, rec = (np.concatenate(v) for v in (right, right_assigned, rr))
    return {
        "center": center,
        "per_plate": per_plate and center != "none",
        "mode": mode,
        "wells": len(r),
        "mrr": round(float(rec.mean()), 4),
        "top1": round(float(r.mean()), 4),
        "assigned_top1": round(float(ra.mean()), 4),
        "map": round(float(np.nanmean(np.concatenate(ap))), 4),
        "_right": ra,
    }


def _reciprocal_rank(scores: np.ndarray, sirna_ids: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 / rank of each row's true class among the columns (0 where the class is not a column).

    Reported beside the criterion as a finer view than top-1; tried as the criterion itself on the real profiles
    (scripts/check_auto_profiles.py), it chose worse than the assignment-first ranking."""
    col = np.clip(np.searchsorted(sirna_ids, y), 0, len(sirna_ids) - 1)
    own = scores[np.arange(len(y)), col]
    rank = 1 + (scores > own[:, None]).sum(axis=1)
    return np.where(sirna_ids[col] == y, 1.0 / rank, 0.0)


def _control_ap(x: np.ndarray, y: np.ndarray, index: Any) -> np.ndarray:
    """Each query control's average precision of retrieving the index's entries of its siRNA (a finer signal than
    top-1, which strong control phenotypes saturate)."""
    from phenoprint.index.metrics import replicate_average_precision

    vectors = np.concatenate([x, index.vectors])
    labels = np.concatenate([y, index.entry_labels])
    batches = np.concatenate([np.full(len(x), "\0query"), index.entries["experiment"].to_numpy(dtype=str)])
    mask = np.zeros(len(vectors), dtype=bool)
    mask[: len(x)] = True
    return replicate_average_precision(vectors, labels, batches, mask)[: len(x)]


__all__ = ["AUTO", "CANDIDATES", "CONTROL_CANDIDATES", "MODES", "Selection", "choose_config", "wants_auto"]
