"""phenoprint.index."""
