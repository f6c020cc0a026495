"""What the embedder stores with an index it onboarded, so that a query is embedded exactly as the index's wells were.

numpy only: the service reads and checks it without torch. The index keeps it opaque: a JSON ``producer`` section
of its manifest and named arrays beside it (``producer.npz``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phenoprint.errors import IndexFormatError

#: The suffixes of the batch-norm buffers kept (running statistics; the affine weights are the model's own).
BN_SUFFIXES = (".running_mean", ".running_var")


@dataclass(frozen=True)
class EmbedderRecord:
    """How an experiment's wells were embedded when its index was built.

    Attributes:
        input_normalization: the model's input standardization (``site`` or ``experiment``).
        tta: dihedral transforms averaged per site, as the manifest says (checked by :meth:`check`: 1-8).
        bn_adapt: whether batch-norm statistics were re-estimated on the experiment.
        channel_stats: the experiment's per-channel input (mean, std), for models that standardize per experiment.
        bn_state: the adapted batch-norm statistics (layer buffer name → array), when ``bn_adapt``.
    """

    input_normalization: str | None = None
    tta: object = 1
    bn_adapt: bool = False
    channel_stats: tuple[np.ndarray, np.ndarray] | None = None
    bn_state: Mapping[str, np.ndarray] | None = field(default=None, repr=False)

    # -- writing and reading -----------------------------------------------------------------------------------------

    def producer(self) -> dict[str, Any]:
        """The manifest's ``producer`` section (JSON)."""
        out: dict[str, Any] = {
            "input_normalization": self.input_normalization,
            "tta": self.tta,
            "bn_adapt": self.bn_adapt,
        }
        if self.channel_stats is not None:
            out["channel_mean"], out["channel_std"] = (np.asarray(s).tolist() for s in self.channel_stats)
        return out

    def arrays(self) -> dict[str, np.ndarray] | None:
        """The named arrays stored beside the manifest (None when there are none)."""
        return dict(self.bn_state) if self.bn_state else None

    @classmethod
    def read(cls, producer: Mapping[str, Any] | None, arrays: Mapping[str, np.ndarray]) -> EmbedderRecord:
        """The record an index stored (its manifest's ``producer`` and its producer arrays); an index built from
        foreign vectors has none, which reads as TTA 1 without adaptation."""
        producer = producer or {}
        stats = None
        if "channel_mean" in producer:
            stats = (
                np.asarray(producer["channel_mean"], dtype=np.float64),
                np.asarray(producer["channel_std"], dtype=np.float64),
            )
        bn = {k: v for k, v in arrays.items() if k.endswith(BN_SUFFIXES)}
        return cls(
            input_normalization=producer.get("input_normalization"),
            tta=producer.get("tta", 1),
            bn_adapt=bool(producer.get("bn_adapt", False)),
            channel_stats=stats,
            bn_state=bn or None,
        )

    # -- compatibility -----------------------------------------------------------------------------------------------

    def check_tta(self, where: str) -> None:
        """Refuse a TTA that is not 1-8 dihedral transforms (a manifest written by hand, or damaged).

        Raises:
            IndexFormatError: naming ``where`` and what to rebuild.
        """
        tta = self.tta
        if isinstance(tta, bool) or not isinstance(tta, int) or not 1 <= tta <= 8:
            raise IndexFormatError(
                f"{where}: its manifest says its wells were embedded with tta={tta!r}; expected 1-8 dihedral "
                "transforms (rebuild it with scripts/build_index.py --tta N)"
            )

    @staticmethod
    def check_input_stats(where: str, in_chans: int, input_stats: tuple[np.ndarray, np.ndarray]) -> None:
        """Refuse input statistics that are not ``in_chans`` finite values with a non-negative spread (those the
        service will use: a record's own, or the model's fallback for the experiment).

        Raises:
            IndexFormatError: naming ``where`` and what to rebuild.
        """
        if any(np.shape(s) != (in_chans,) for s in input_stats):
            raise IndexFormatError(f"{where}: its input statistics are not {in_chans} per-channel values")
        mean, std = (np.asarray(s, dtype=np.float64) for s in input_stats)
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()):
            raise IndexFormatError(
                f"{where}: its input statistics hold non-finite values or a negative standard deviation "
                f"(mean {mean.tolist()}, std {std.tolist()}); rebuild it with scripts/build_index.py"
            )

    def check_bn_state(self, where: str, model_state: Mapping[str, np.ndarray], stored_as: str) -> None:
        """Refuse adapted batch-norm statistics that are not exactly the model's: every layer, each of its shape.

        Raises:
            IndexFormatError: naming ``where``, the layers that differ and what to rebuild.

        Args:
            where: the index, for the message.
            model_state: the model's own batch-norm buffers (layer buffer name → array).
            stored_as: the file they were read from, for the message.
        """
        state = self.bn_state
        if state is None:
            return
        missing = sorted(set(model_state) - set(state))
        extra = sorted(set(state) - set(model_state))
        wrong = sorted(
            k
            for k in set(model_state) & set(state)
            if np.shape(state[k]) != model_state[k].shape or not np.issubdtype(np.asarray(state[k]).dtype, np.floating)
        )
        if missing or extra or wrong:
            found = [
                f"{what} {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                for what, names in (("missing", missing), ("unexpected", extra), ("of another shape or type", wrong))
                if names
            ]
            raise IndexFormatError(
                f"{where}: its adapted batch-norm statistics ({stored_as}) do not fit the model: "
                f"{'; '.join(found)}; rebuild it with scripts/build_index.py --bn-adapt from this model"
            )
