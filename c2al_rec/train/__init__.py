"""Training: the C2AL objective, metrics, the Trainer (DMP + TrainPipelineSparseDist), entry points."""
