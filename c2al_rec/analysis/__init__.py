"""Evaluation (NE per cohort, NE_diff with intervals), mechanism diagnostics, reports."""
