"""The VICReg engine, importable without the app; `python -m vicreg` is its command line (__main__.py).

Its folders are floors, each importing only the floors below it (scripts/import_cycles.py checks this):

- orchestration/: a run in the background, in bounded calls, under torchrun; the command line's options
- training/: the datasets, the training loop, and evaluating and embedding with a backbone
- runfiles/: what a run writes and reads back safely (checkpoints, metrics, names) and the events it reports
- core/: the learning pieces (config, model, loss, augmentation, optimiser, runtime, data-parallel helpers)

Importing the package imports nothing else (no torch), so `python -m vicreg --help` stays quick.
"""
