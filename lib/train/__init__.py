"""Training: the engine (one epoch, evaluation, the run), the optimizer step, losses and metrics, the checkpoint
saver, resume, the run lock, messages, plots, encoder weights and the threshold baseline."""
