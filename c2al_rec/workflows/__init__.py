"""Workflows: sequences of library calls that make up a C2AL study (discovery, evaluation, the
pipeline, the multi-seed experiment). They call library functions, never a CLI."""
