"""A trained run: load it unsharded from its checkpoint, score a dataset split with it, its provenance.

Everything that reads a finished run (discovery, evaluation, export, the experiment) goes through
here; nothing here knows how the run was trained.
"""

from .load import TrainedRun, check_schema_matches, load_run
from .scoring import score_split, side_columns

__all__ = ["TrainedRun", "check_schema_matches", "load_run", "score_split", "side_columns"]
