"""A training run: the job and its config, the Trainer, its callback, schedule, optimizer, loss, multi-process."""
