"""phenoprint.embedder."""
