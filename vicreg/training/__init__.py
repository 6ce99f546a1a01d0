"""The datasets, the training loop (a run's setup and step in run.py, its epochs in train.py, its time budget,
its learning monitor), and evaluating and embedding with a backbone. May import vicreg.core and
vicreg.runfiles."""
