"""Serving: load an exported model directory and score Parquet. Needs only the exported artifact."""
