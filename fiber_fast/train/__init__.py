"""Two-stage FIBER training and OSCAR pre-training: objectives, tasks (model + losses), DeepSpeed trainer,
checkpoints, metrics."""
