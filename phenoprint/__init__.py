"""phenoprint: name the siRNA of a Cell Painting well across batches (RxRx1 and data like it)."""

__version__ = "0.1.0"
