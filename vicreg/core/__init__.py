"""The learning pieces: the config and its presets, the runtime (device, precision, threads), the model and its
fast convolutions, the loss, augmentation, the optimiser, BatchNorm folding, embedding health and the
data-parallel helpers. Imports nothing else of vicreg: every other folder builds on this one."""
