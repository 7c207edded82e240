"""Training (issue 6, in progress): data loading (`data.py`) and learning-rate schedules (`schedule.py`) so far;
the autodiff pass, optimizers and the training loop follow."""
