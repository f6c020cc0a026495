"""Naming a whole batch: `phenoprint predict` (every well of an onboarded experiment, decoded jointly per plate)."""
