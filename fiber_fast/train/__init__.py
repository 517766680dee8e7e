"""Two-stage FIBER training: objectives, tasks (model + losses), DeepSpeed trainer, checkpoints, metrics."""
