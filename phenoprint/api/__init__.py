"""phenoprint.api."""
