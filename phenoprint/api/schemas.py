"""Request and response bodies of the HTTP API (requests are multipart forms; responses are JSON)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import File, UploadFile
from pydantic import BaseModel, Field

from phenoprint.index.config import Mode

_FILES = (
    "The well's channel images: 6 PNGs per site (w1-w6) for 1 or 2 sites, as repeated parts of this field. Site and "
    "channel come from each file's name as in RxRx1 (`…_s<site>_w<channel>.png`, e.g. `B02_s1_w1.png`)."
)
_WELL_PATTERN = r"^[A-Pa-p](0[1-9]|1[0-9]|2[0-4])$"

# -- requests ---------------------------------------------------------------------------------------------------------

#: The ``files`` parts of a multipart request (a separate parameter, so that OpenAPI says multipart/form-data).
WellFiles = Annotated[list[UploadFile], File(description=_FILES, min_length=1)]
SiteFiles = Annotated[
    list[UploadFile],
    File(description="The 6 channel PNGs (w1-w6) of one site, named like B02_s1_w1.png.", min_length=1),
]


class ClassifyFields(BaseModel):
    """``POST /classify``: the form fields next to the well's ``files``."""

    experiment: str = Field(
        min_length=1, max_length=200, description="experiment of the well (its index and centering), e.g. HUVEC-05"
    )
    top_k: int = Field(5, ge=1, le=50, description="candidate siRNAs returned")
    plate: int | None = Field(None, ge=1, le=1000, description="plate of the well (required by per-plate indexes)")
    well: str | None = Field(None, pattern=_WELL_PATTERN, description="well name, echoed (e.g. B02)")


class EmbedFields(BaseModel):
    """``POST /embed``: the form fields next to the well's ``files``; ``experiment`` adds the centred vector."""

    experiment: str | None = Field(
        None, min_length=1, max_length=200, description="centre the vector with this experiment's statistics"
    )
    plate: int | None = Field(None, ge=1, le=1000, description="plate of the well (required by per-plate indexes)")
    well: str | None = Field(None, pattern=_WELL_PATTERN, description="well name, echoed (e.g. B02)")
    per_site: bool = Field(False, description="also return one vector per site")
    cell_type: str | None = Field(
        None, max_length=50, description="cell type, for models with cell-type context when no experiment is given"
    )


# -- responses --------------------------------------------------------------------------------------------------------


class PredictionOut(BaseModel):
    sirna_id: int = Field(description="the candidate siRNA")
    sirna: str | None = Field(
        None, description="its name where the indexed wells' metadata gives one (RxRx1 v1.0 `sirna`), else null"
    )
    score: float = Field(description="kNN vote share (0-1) or centroid cosine, by the service's classify mode")
    rank: int = Field(description="1 for the best")


class ClassifyTimings(BaseModel):
    """Milliseconds spent in each step of the request."""

    decode: float = Field(description="reading and decoding the PNGs")
    embed: float = Field(description="waiting for and running the micro-batched forward pass")
    search: float = Field(description="centering and searching the index")
    total: float = Field(description="from the parsed request to the answer")


class ClassifyResponse(BaseModel):
    experiment: str
    predictions: list[PredictionOut] = Field(description="the top-k siRNAs, best first")
    unknown: bool = Field(description="open-set flag: the well resembles no known siRNA of the index closely enough")
    best_similarity: float = Field(description="cosine to the nearest siRNA centroid (what the open-set rule tests)")
    mode: Mode = Field(description="the index's classification mode (or the service's override)")
    centering: str = Field(description="the index's batch centering, e.g. 'tvn' or 'center per plate (auto)'")
    plate: int | None
    well: str | None = Field(description="as sent, or as the file names give it")
    sites: list[int] = Field(description="site numbers that were embedded")
    model_fingerprint: str
    index_created: str | None = Field(description="creation time of the index that answered (its manifest)")
    timings: ClassifyTimings


class EmbedTimings(BaseModel):
    decode: float
    embed: float
    center: float
    total: float


class SiteEmbedding(BaseModel):
    site: int
    embedding: list[float]


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="the well's unit vector (normalized mean of its sites')")
    dim: int
    centred: list[float] | None = Field(description="the vector centred with the experiment's statistics")
    experiment: str | None
    plate: int | None
    well: str | None
    sites: list[int]
    site_embeddings: list[SiteEmbedding] | None = Field(description="one unit vector per site, when asked for")
    model_fingerprint: str
    timings: EmbedTimings


class ExperimentSummary(BaseModel):
    experiment: str
    cell_type: str
    entries: int = Field(description="wells in the index")
    sirnas: int
    controls: int = Field(description="the experiment's own control wells in the index")
    source_experiments: list[str] = Field(description="other experiments whose labelled wells are indexed")
    centering: str = Field(description="none | center | center_scale | tvn")
    per_plate: bool
    index_kind: str
    mode: str = Field(description="classification mode the index records (knn | centroid)")
    selected: str | None = Field(
        description="why --center/--mode auto chose this centering and mode (null: they were given)"
    )
    fingerprint: str | None
    created: str | None
    loaded_at: str = Field(description="when this service read the index (UTC)")
    predicted_wells: int | None = Field(
        description="wells of the experiment in the served predictions (null: none served; see "
        "GET /experiments/{experiment}/predictions)"
    )


class ExperimentList(BaseModel):
    experiments: list[ExperimentSummary]
    refused: dict[str, str] = Field(description="index folders that could not be served, and why")
    refused_predictions: dict[str, str] = Field(
        default_factory=dict, description="predictions files that could not be read, and why"
    )


class PredictionCandidate(BaseModel):
    sirna_id: int
    sirna: str | None = Field(description="its name, where the index knows one")
    score: float = Field(description="its score in the mode the predictions were made in")


class PredictedWell(BaseModel):
    plate: int
    well: str
    row: int = Field(description="zero-based row on the plate grid (A = 0)")
    column: int = Field(description="zero-based column on the plate grid (01 = 0)")
    well_type: str | None = Field(
        description="positive_control / negative_control for the experiment's own control wells in the index; null "
        "for the others (treatments, or wells the index does not list)"
    )
    sirna_id: int = Field(description="the jointly assigned siRNA")
    sirna: str | None
    score: float
    confidence: float | None = Field(description="the assignment's margin over the best other candidate")
    assigned: bool = Field(description="placed by the plate assignment (false: per-well fallback)")
    unknown: bool = Field(description="open-set flag: the well resembles no indexed siRNA closely enough")
    similarity: float | None = Field(
        description="centroid cosine of the well to its assigned siRNA, which the open-set rule thresholds (null: "
        "predictions written before it was recorded)"
    )
    top_k: list[PredictionCandidate] = Field(description="the well's own top-k, best first")
    true_sirna_id: int | None = Field(description="its label, where the predicted table carried one")
    correct: bool | None = Field(description="assigned siRNA == label (null: unlabelled)")


class PlatePrediction(BaseModel):
    plate: int
    group: int | None = Field(description="the plate's chosen treatment group (null: no plate design applied)")
    group_margin: float | None = Field(description="mean per-well lead of that group over the next best")
    wells: int
    unknown: int = Field(description="wells flagged unknown")
    labelled: int = Field(description="wells with a label")
    correct: int = Field(description="labelled wells named right")


class PredictionsResponse(BaseModel):
    experiment: str
    source: str = Field(description="the predictions file's name")
    loaded_at: str = Field(description="when this service read it (UTC)")
    rows: int = Field(description="rows of the plate grid")
    columns: int = Field(description="columns of the plate grid")
    row_names: list[str]
    k: int = Field(description="per-well candidates in top_k")
    labelled: bool = Field(description="whether any well carries a label (right/wrong can be shown)")
    open_set_threshold: float = Field(description="the index's open-set threshold on similarity")
    plates: list[PlatePrediction]
    wells: list[PredictedWell]


class ExperimentDetail(ExperimentSummary):
    manifest: dict[str, Any] = Field(description="the index's manifest.json")


class SirnaLocation(BaseModel):
    experiment: str
    plate: int
    well: str
    cell_type: str


class SimilarSirna(BaseModel):
    sirna_id: int
    sirna: str | None = Field(None, description="its name where the metadata gives one, else null")
    score: float = Field(description="cosine between the two siRNAs' centroids")
    rank: int
    kind: str


class SirnaResponse(BaseModel):
    sirna_id: int
    sirna: str | None = Field(None, description="its name where the metadata gives one, else null")
    kind: str = Field(description="treatment, positive_control or negative_control (from its wells' type)")
    locations: list[SirnaLocation] = Field(description="its wells in the indexes loaded (each listed once)")
    experiments: list[str] = Field(description="loaded indexes that contain it")
    similar_in: str = Field(description="the index whose centroids gave `similar`")
    similar: list[SimilarSirna] = Field(description="nearest siRNAs by centroid cosine, best first")


class Health(BaseModel):
    status: Literal["ok"]
    version: str = Field(description="phenoprint's package version")
    model_fingerprint: str | None = Field(description="the served model's fingerprint (null while it loads)")
    indexes: int = Field(description="per-experiment indexes loaded now")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    model_fingerprint: str | None
    experiments: list[str]
    reasons: list[str] = Field(description="why the service is not ready (empty when it is)")


class ErrorMessage(BaseModel):
    detail: str = Field(description="what was wrong and what to send instead")


class UnknownExperimentMessage(ErrorMessage):
    known: list[str] = Field(description="the experiments that are loaded")
