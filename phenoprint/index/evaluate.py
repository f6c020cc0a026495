"""Leave-experiment-out evaluation: accuracy with and without plate assignment, replicate mAP, batch mixing.

Kept as one module although long: the report, the held-out loop and its groupings and the metrics it
gathers are read together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError
from phenoprint.index.assign import assign_experiment
from phenoprint.index.build import assemble_index, entry_mask, scope_mask
from phenoprint.index.centering import POOLED_BASE, l2_normalize
from phenoprint.index.choose import choose_config, wants_auto
from phenoprint.index.classify import MODES, classify, sirna_scores
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.metrics import MAP_BACKENDS, mean_average_precision, replicate_ap, silhouette
from phenoprint.index.plate_groups import learn_plate_groups
from phenoprint.index.table_centering import ENSEMBLE, center_table, ensemble_views, fit_configured

log = logging.getLogger(__name__)

#: What ``evaluate`` holds out in turn: a whole experiment (batch), or one plate (the rest of its experiment, other
#: plates, then stands with the other experiments as reference).
GROUP_BYS: tuple[str, ...] = ("experiment", "plate")


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`evaluate` measures and how the indexes it queries are built."""

    index: IndexConfig = field(default_factory=IndexConfig)  # centering, scope and FAISS settings of each index
    holdout: tuple[str, ...] | None = None  # experiments queried (None: every experiment with labels, in turn)
    k: int = 5  # top-k accuracy
    modes: tuple[str, ...] = MODES  # classification modes compared: knn and/or centroid
    assign: bool = False  # also score plate-constrained assignment (needs plate groups from the labels)
    replicate_map: bool = True  # mAP of retrieving each query's replicates in other experiments, before/after
    silhouette: bool = True  # silhouette by experiment within each cell type, before/after centering
    max_silhouette_rows: int = 2000  # rows sampled per cell type for the (quadratic) silhouette
    max_map_queries: int | None = None  # query rows sampled for mAP (None: all of the held-out experiments)
    seed: int = 0  # for the samples above
    group_by: str = "experiment"  # experiment | plate: the unit held out (leave-one-experiment- or plate-out)
    exclude_same_well: bool = False  # entries at the query's well position are neither neighbours nor in centroids
    map_backend: str = "auto"  # replicate AP by copairs (auto: where installed and small enough) or phenoprint's own

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BYS)}; got {self.group_by!r}")
        if self.map_backend not in MAP_BACKENDS:
            raise ValueError(f"map_backend must be one of {', '.join(MAP_BACKENDS)}; got {self.map_backend!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1; got {self.k}")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be a non-empty subset of {', '.join(MODES)}; got {self.modes}")
        if self.holdout is not None and not self.holdout:
            raise ValueError("holdout must name at least one experiment (or be None for all)")
        if self.max_silhouette_rows < 2:
            raise ValueError(f"max_silhouette_rows must be >= 2; got {self.max_silhouette_rows}")
        if self.max_map_queries is not None and self.max_map_queries < 1:
            raise ValueError(f"max_map_queries must be >= 1 or None; got {self.max_map_queries}")

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["index"] = self.index.to_json()
        out["holdout"] = None if self.holdout is None else list(self.holdout)
        out["modes"] = list(self.modes)
        return out


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` found.

    Attributes:
        config: the configuration it ran with.
        n_queries: query wells scored (labelled treatment wells of the held-out experiments).
        overall: metric → value over all queries, e.g. ``knn_top1``, ``knn_top5``, ``knn_assigned_top1``,
            ``knn_unknown`` (share flagged unknown: all queries are known siRNAs, so this is the false-unknown
            rate), ``reachable`` (share whose siRNA had any entry in the index).
        per_cell_type: cell type → the same metrics.
        per_experiment: experiment → the same metrics.
        replicate_map: ``before`` / ``after`` centering: mAP of retrieving replicates from other experiments.
        silhouette: ``before`` / ``after`` centering: silhouette by experiment, averaged over cell types (lower
            means better mixed batches).
        skipped: held-out experiments that could not be evaluated → why.
        seconds: wall time.
        choices: with ``center`` or ``mode`` ``auto``: held-out experiment → the choice made on its own controls
            (:class:`phenoprint.index.choose.Selection` as JSON); its answers are the ``auto_*`` metrics.
        per_query: one row per query with its truth and predictions (not in the JSON).
    """

    config: EvalConfig
    n_queries: int
    overall: dict[str, float]
    per_cell_type: dict[str, dict[str, float]]
    per_experiment: dict[str, dict[str, float]]
    replicate_map: dict[str, float | None]
    silhouette: dict[str, float | None]
    skipped: dict[str, str]
    seconds: float
    per_query: pd.DataFrame = field(repr=False, compare=False)
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)  # experiment → what ``auto`` chose and why
    map_backend: str | None = None  # who computed the replicate APs (copairs | phenoprint); None without mAP

    def metrics(self) -> list[str]:
        return list(self.overall)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "n_queries": self.n_queries,
            "overall": self.overall,
            "per_cell_type": self.per_cell_type,
            "per_experiment": self.per_experiment,
            "replicate_map": self.replicate_map,
            "silhouette": self.silhouette,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "choices": self.choices,
            "map_backend": self.map_backend,
        }

    def format_table(self) -> str:
        """A plain-text summary: accuracy by mode (overall and per cell type), mAP and silhouette."""
        ic = self.config.index
        k = self.config.k
        lines = [
            f"{len(self.per_experiment)} held-out experiment(s), {self.n_queries} query wells; "
            f"centering {ic.center} on {ic.reference}{' per plate' if ic.per_plate else ''}, scope {ic.scope}"
        ]
        cols = [("top1", "top1"), (f"top{k}", f"top{k}")]
        if self.config.assign:
            cols.append(("assigned_top1", "top1+assign"))
        cols.append(("unknown", "unknown"))
        header = f"{'':<22}" + "".join(f"{name:>13}" for _, name in cols)
        for title, rows in (("overall", {"all": self.overall}), ("per cell type", self.per_cell_type)):
            lines += ["", f"{title}:", header]
            for group, metrics in rows.items():
                for mode in (*self.config.modes, *(("auto",) if self.choices else ())):
                    vals = "".join(_fmt(metrics.get(f"{mode}_{key}")) for key, _ in cols)
                    lines.append(f"{(group + ' ' + mode)[:22]:<22}{vals}")
        lines.append("")
        lines.append(f"reachable (siRNA present in the index): {_fmt(self.overall.get('reachable')).strip()}")
        by = f" (by {self.map_backend})" if self.map_backend else ""
        for name, pair, note in (
            ("replicate mAP", self.replicate_map, by),
            ("silhouette by experiment", self.silhouette, ""),
        ):
            if pair:
                lines.append(
                    f"{name}: before {_fmt(pair.get('before')).strip()} -> after {_fmt(pair.get('after')).strip()}"
                    + note
                )
        for exp, choice in self.choices.items():
            noisy = " (within noise)" if choice.get("within_noise") else ""
            lines.append(f"auto for {exp}: {choice.get('reason')}{noisy}")
        for exp, why in self.skipped.items():
            lines.append(f"skipped {exp}: {why}")
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return f"{'-':>13}" if v is None else f"{v:>13.3f}"


def evaluate(table: EmbeddingTable, config: EvalConfig) -> EvalReport:
    """Query each held-out experiment against an index built from the others and its own controls.

    Every experiment is centred with its own statistics (fitted on its reference wells, never on labels; a
    sphering's pooled whitening without the held-out experiment, as onboarding it would be), then for each held-out
    experiment an index is assembled exactly as :func:`build_experiment_index` would (its labelled controls plus the
    labelled wells of the other experiments in scope) and its labelled treatment wells are classified. With
    ``assign``, each plate's treatment wells are assigned one-to-one among the treatments of the group chosen for it
    (the wells are known to be treatments, so controls are not candidates); plate groups are learned from the
    experiments in scope without the held-out one. Site tables are averaged to wells first.

    Raises:
        UnknownExperimentError: a holdout experiment is not in the table.
        EmbeddingTableError: no labelled wells to query, or a batch lacks reference wells.
    """
    started = time.perf_counter()
    ic = config.index
    table = table.aggregate_sites()
    meta = table.meta
    labels = table.labels()
    exps = meta["Metadata_experiment"].to_numpy(dtype=str)
    is_query = (labels >= 0) & (meta["Metadata_well_type"] == "treatment").to_numpy()
    holdout = _holdouts(table, config.holdout, is_query)
    auto = wants_auto(ic)
    centring = _Centrings(table, ic)
    why_not = {exp: _skip_reason(table, is_query & (exps == exp), exps, exp, ic.scope) for exp in holdout}
    skipped = {exp: why for exp, why in why_not.items() if why is not None}
    held = np.isin(exps, [e for e in holdout if e not in skipped])
    replicates = _ReplicateMap(table, labels, is_query & held, config)

    parts: list[pd.DataFrame] = []
    choices: dict[str, dict[str, Any]] = {}
    for exp in holdout:
        if exp in skipped:
            continue
        q = is_query & (exps == exp)
        exp_ic, modes = ic, config.modes
        if auto:  # chosen on the held-out experiment's own controls, as onboarding it would choose
            in_scope = table.subset(scope_mask(table, exp, ic.scope))
            exp_ic, selection = choose_config(in_scope, exp, ic, exclude_same_well=config.exclude_same_well)
            choices[exp] = selection.to_json()
            modes = tuple(dict.fromkeys((*config.modes, exp_ic.mode)))
        # a sphering's whitening fitted without the held-out experiment, as onboarding it would fit
        stats, centred = centring(exp_ic.center, exp_ic.per_plate, held_out=exp)
        groups = None
        if config.assign:
            groups = learn_plate_groups(table, exclude=exp, within=scope_mask(table, exp, ic.scope), quiet=True)
        for group_q, view in _held_out_groups(table, q, exp, config.group_by):
            index = assemble_index(view, centred, stats, exp, exp_ic, table.fingerprint, plate_groups=groups)
            frame = _query_frame(table, labels, centred[group_q], group_q, index, exp, config, modes)
            if auto:  # the chosen mode's columns again, as auto's
                frame = frame.join(_columns_of(frame, exp_ic.mode).add_prefix("auto_"))
            parts.append(frame)
            log.debug("evaluated %s: %d queries against %d entries", exp, int(group_q.sum()), len(index))
        if not auto and not centring.shared(ic.center):  # its own fit: its queries' mAP now, while it is at hand
            replicates.score_after(centred, exp)
    if not parts:
        reasons = "; ".join(f"{e}: {r}" for e, r in skipped.items())
        raise EmbeddingTableError(f"no held-out experiment could be evaluated ({reasons})")
    per_query = pd.concat(parts, ignore_index=True)
    summary = _summarizer(per_query, config.k)
    center, per_plate = _most_chosen(choices) if auto else (ic.center, ic.per_plate)  # auto: for mAP and mixing
    replicates.score_after_all(centring, center, per_plate)
    report = EvalReport(
        config=config,
        n_queries=len(per_query),
        overall=summary(per_query),
        per_cell_type={str(ct): summary(f) for ct, f in per_query.groupby("cell_type")},
        per_experiment={str(e): summary(f) for e, f in per_query.groupby("experiment")},
        replicate_map=replicates.result(),
        # batch mixing is a property of the whole table: with the one fit pooled over every batch
        silhouette=_silhouettes(table, centring(center, per_plate)[1], config) if config.silhouette else {},
        skipped=skipped,
        seconds=time.perf_counter() - started,
        per_query=per_query,
        choices=choices,
        map_backend=replicates.backend(),
    )
    log.debug("evaluation took %.2f s", report.seconds)
    return report


def _most_chosen(choices: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The (centering, per plate) that ``auto`` chose for the most held-out experiments."""
    picks = pd.Series([(c["center"], c["per_plate"]) for c in choices.values()])
    center, per_plate = picks.value_counts().index[0]
    return str(center), bool(per_plate)


def _held_out_groups(
    table: EmbeddingTable, q: np.ndarray, exp: str, group_by: str
) -> list[tuple[np.ndarray, EmbeddingTable]]:
    """The query masks held out in turn for experiment ``exp`` and the table each one's index is assembled from.

    ``experiment``: all of ``exp``'s queries against the table. ``plate``: each plate's queries in turn, against a
    view of the table where ``exp``'s other plates stand as one more experiment (their labelled wells become
    entries); every row keeps the centering of its own experiment."""
    if group_by == "experiment":
        return [(q, table)]
    plates = table.meta["Metadata_plate"].to_numpy(dtype=np.int64)
    on_exp = table.experiment_mask(exp)
    out = []
    for p in sorted(set(plates[q].tolist())):
        meta = table.meta.copy()
        meta.loc[on_exp & (plates != p), "Metadata_experiment"] = f"{exp} (plates other than {p})"
        view = EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint, dict(table.info))
        out.append((q & (plates == p), view))
    return out


class _Centrings:
    """Every experiment of a table centred once per (centering, per plate) asked for, and for a sphering method
    (:data:`POOLED_BASE`) once more per held-out experiment, whose whitening is fitted without it."""

    def __init__(self, table: EmbeddingTable, config: IndexConfig) -> None:
        self.table, self.config = table, config
        self.fitted: dict[tuple[str, bool, str | None], tuple[dict, np.ndarray]] = {}

    def shared(self, center: str) -> bool:
        """Whether one fit serves every held-out experiment (no pooled whitening to keep it out of, the ensemble's
        views included)."""
        if self.config.pool == "all":  # the whitening is fitted on every batch, the held-out one included
            return True
        if center == ENSEMBLE:
            return not any(m in POOLED_BASE for m, _ in ensemble_views(self.config.reference))
        return center not in POOLED_BASE

    def __call__(self, center: str, per_plate: bool, held_out: str | None = None) -> tuple[dict, np.ndarray]:
        held_out = None if self.shared(center) else held_out
        key = (center, per_plate, held_out)
        if key not in self.fitted:
            if held_out is not None:  # one held-out fit kept at a time: a table's worth of vectors each
                for old in [k for k in self.fitted if k[2] is not None]:
                    del self.fitted[old]
            st = fit_configured(self.table, self.config, center=center, per_plate=per_plate, new_batch=held_out)
            self.fitted[key] = st, center_table(self.table, st, per_plate)
        return self.fitted[key]


def _skip_reason(table: EmbeddingTable, q: np.ndarray, exps: np.ndarray, exp: str, scope: str) -> str | None:
    """Why held-out ``exp`` (query mask ``q``) cannot be evaluated, or None."""
    if not q.any():
        return "no labelled treatment wells to query"
    if not (entry_mask(table, exp, scope) & (exps != exp)).any():
        return f"no labelled wells of other experiments in scope {scope!r}"
    return None


def _summarizer(per_query: pd.DataFrame, k: int) -> Callable[[pd.DataFrame], dict[str, float]]:
    """The mean of every metric column (top-1, top-k, unknown, reachable) of a group of query rows."""
    metric_cols = [c for c in per_query.columns if c.endswith(("_top1", f"_top{k}", "_unknown"))]
    metric_cols.append("reachable")
    return lambda frame: {c: float(frame[c].mean()) for c in metric_cols}


def _columns_of(frame: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The columns of one mode (``<mode>_top1``, ...), named without the mode's prefix."""
    cols = [c for c in frame.columns if c.startswith(f"{mode}_")]
    return frame[cols].rename(columns=lambda c: c[len(mode) + 1 :])


def _score_mode(
    frame: pd.DataFrame, queries: np.ndarray, index: ExperimentIndex, mode: str, plates: np.ndarray, config: EvalConfig
) -> None:
    """Add one classification mode's columns to ``frame`` (its ``sirna_id`` the truth): prediction, top-1, top-k,
    open-set flag and, with ``config.assign``, the plate-assigned answer."""
    y = frame["sirna_id"].to_numpy()
    wells = frame["well"].to_numpy(dtype=str) if config.exclude_same_well else None
    cls = classify(queries, index, k=config.k, mode=mode, exclude_wells=wells)
    frame[f"{mode}_pred"] = cls.top1
    frame[f"{mode}_top1"] = cls.top1 == y
    frame[f"{mode}_top{config.k}"] = (cls.sirna_ids == y[:, None]).any(axis=1)
    frame[f"{mode}_unknown"] = cls.unknown
    if config.assign:
        sc = sirna_scores(queries, index, mode)
        a = assign_experiment(sc.scores, sc.sirna_ids, plates, index.plate_groups)
        frame[f"{mode}_assigned"] = a.sirna_ids
        frame[f"{mode}_assigned_top1"] = a.sirna_ids == y


def _query_frame(
    table: EmbeddingTable,
    labels: np.ndarray,
    x: np.ndarray,
    q: np.ndarray,
    index: ExperimentIndex,
    exp: str,
    config: EvalConfig,
    modes: tuple[str, ...],
) -> pd.DataFrame:
    """One row per query well of ``exp`` (mask ``q``, centred vectors ``x``): its truth and each mode's answers."""
    meta = table.meta
    y = labels[q]
    plates = meta["Metadata_plate"].to_numpy(dtype=np.int64)[q]
    frame = pd.DataFrame(
        {
            "experiment": exp,
            "cell_type": meta.loc[q, "Metadata_cell_type"].to_numpy(dtype=str),
            "plate": plates,
            "well": meta.loc[q, "Metadata_well"].to_numpy(dtype=str),
            "sirna_id": y,
            "reachable": np.isin(y, index.sirna_ids),
        }
    )
    for mode in modes:
        _score_mode(frame, x, index, mode, plates, config)
    return frame


def _holdouts(table: EmbeddingTable, holdout: tuple[str, ...] | None, is_query: np.ndarray) -> list[str]:
    known = set(table.experiments)
    if holdout is not None:
        for exp in holdout:
            if exp not in known:
                raise UnknownExperimentError(exp, known)
        return list(dict.fromkeys(holdout))
    exps = table.meta["Metadata_experiment"].to_numpy(dtype=str)
    with_queries = sorted(set(exps[is_query]))
    if not with_queries:
        raise EmbeddingTableError(
            "no labelled treatment wells to evaluate on (Metadata_sirna_id is null or every well is a control)"
        )
    return with_queries


class _ReplicateMap:
    """The replicate mAP of the held-out queries (a seeded sample of at most ``max_map_queries``), before centering
    and after it, each held-out experiment's queries centred as its own evaluation centred them."""

    def __init__(self, table: EmbeddingTable, labels: np.ndarray, queries: np.ndarray, config: EvalConfig) -> None:
        self.table, self.labels, self.config = table, labels, config
        self.batches = table.meta["Metadata_experiment"].to_numpy(dtype=str)
        rows = np.flatnonzero(queries) if config.replicate_map else np.zeros(0, dtype=np.int64)
        if config.max_map_queries is not None and len(rows) > config.max_map_queries:
            rng = np.random.default_rng(config.seed)
            rows = np.sort(rng.choice(rows, config.max_map_queries, replace=False))
        self.rows = rows
        self.after = np.full(len(table), np.nan)
        self.scored: set[str] = set()  # held-out experiments whose queries have their "after" AP
        self.backends: set[str] = set()

    def score_after(self, centred: np.ndarray, experiment: str) -> None:
        """Score the sampled queries of ``experiment`` on these centred vectors."""
        rows = self.rows[self.batches[self.rows] == experiment]
        if len(rows):
            self.after[rows] = self._ap(centred, rows)
        self.scored.add(experiment)

    def score_after_all(self, centring: _Centrings, center: str, per_plate: bool) -> None:
        """Score the queries of the held-out experiments not scored yet with ``center``: in one pass where one fit
        serves them all."""
        rows = self.rows[~np.isin(self.batches[self.rows], sorted(self.scored))]
        if not len(rows):
            return
        if centring.shared(center):
            self.after[rows] = self._ap(centring(center, per_plate)[1], rows)
            return
        for exp in sorted(set(self.batches[rows].tolist())):
            self.score_after(centring(center, per_plate, held_out=exp)[1], exp)

    def result(self) -> dict[str, float | None]:
        if not self.config.replicate_map:
            return {}
        before = np.full(len(self.table), np.nan)
        before[self.rows] = self._ap(self.table.features, self.rows)
        return {"before": mean_average_precision(before), "after": mean_average_precision(self.after)}

    def backend(self) -> str | None:
        """Who computed the APs (``copairs``, ``phenoprint``, or both joined by ``+``); None without mAP."""
        return " + ".join(sorted(self.backends)) or None

    def _ap(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(x), dtype=bool)
        mask[rows] = True
        result = replicate_ap(x, self.labels, self.batches, mask, backend=self.config.map_backend)
        self.backends.add(result.backend)
        return result.ap[rows]


def _silhouettes(table: EmbeddingTable, centred: np.ndarray, config: EvalConfig) -> dict[str, float | None]:
    """Silhouette by experiment within each cell type (cell types differ biologically), weighted by rows."""
    rng = np.random.default_rng(config.seed)
    raw = l2_normalize(table.features)
    values: dict[str, list[tuple[float, int]]] = {"before": [], "after": []}
    for _, frame in table.meta.groupby("Metadata_cell_type"):
        rows = frame.index.to_numpy()
        if len(rows) > config.max_silhouette_rows:
            rows = np.sort(rng.choice(rows, config.max_silhouette_rows, replace=False))
        clusters = table.meta["Metadata_experiment"].to_numpy(dtype=str)[rows]
        for name, x in (("before", raw), ("after", centred)):
            s = silhouette(x[rows], clusters)
            if s is not None:
                values[name].append((s, len(rows)))
    return {
        name: (float(np.average([v for v, _ in vs], weights=[w for _, w in vs])) if vs else None)
        for name, vs in values.items()
    }


def validation_top1(table: EmbeddingTable, holdout: tuple[str, ...]) -> float:
    """Training's progress monitor: kNN top-1 of the held-out experiments' treatment wells against indexes of the
    reference wells, mean-centred on each experiment's controls, no open-set flag (handed to
    :func:`phenoprint.embedder.train.train` by the jobs that train)."""
    config = EvalConfig(
        index=IndexConfig(center="center", mode="centroid", open_set_quantile=0.0),
        holdout=holdout,
        modes=("knn",),
        replicate_map=False,
        silhouette=False,
    )
    return float(evaluate(table, config).overall["knn_top1"])
