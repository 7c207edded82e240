"""Training (issue 6, in progress): data loading so far (`data.py`); the autodiff pass, optimizers and the training
loop follow."""
