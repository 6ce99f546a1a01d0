"""Named recipes: TrainConfig field overrides, keyed by the run name they train (the CLI's --preset, the app's
preset buttons and the checkpoint file all use these names; TrainConfig.from_preset builds one)."""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # What a visitor watches learn on the embedded sample (its 2,000 training images, so no dataset is needed):
    # sized by time, so each ends on time on any 2-core CPU (vicreg/training/budget.py), with Explore's guess
    # measured on 500 test images every 15 (30) s of training or more (vicreg/training/watch.py keeps it under
    # a tenth of the time; fewer images read noisier: docs/recipes.md).
    # The recipe is the one that learned the most per CPU-second in the search in docs/recipes.md.
    # Small views: 16-px ones are 3.7x the pairs per second of 32-px ones, and in the search no other knob (LARS rate
    # or trust ratio, AdamW, batch 32, 4 views, crop scale, colour jitter, projector width, initialisation)
    # learned more in the same time. A warm-up of a tenth of an epoch: half an epoch is a quarter of a 2-minute
    # run spent below the full rate. Both watch 500 images: 250 read too noisily to show the Quick demo's rise
    # (docs/recipes.md), and on a CPU too slow for four points the monitor keeps a part of them (watch.py).
    # ResNet-18 at half its width (32-64-128-256 channels, 256-d features): a quarter of the compute per image,
    # so twice the steps or more in the same seconds on a CPU, and in the search it learned the most per CPU-second
    # (width 64, 48 and 16 learned less in the same 2 minutes).
    # At the end, BatchNorm statistics re-estimated on the sample's 2,000 clean 32-px training images (precise_bn):
    # the ones kept while training describe small augmented views, and the guess rose by 1.5 to 2.5 points in the
    # Quick demo (about a second of work) and by up to a point in longer runs. Checkpoints every 30 s rather than at
    # each epoch's end: the epochs take seconds, and saving each took about 4 % of the Quick demo's time.
    # Views of 24 px: pairs of 16-px ones are 1.5x the steps per second, but from about 2 minutes on, 24-px views
    # learned more in the same time (docs/recipes.md). 130 s: on an AVX-512-bf16 CPU it fitted 22 epochs (116 s of
    # wall time), and runs of 20 to 28 epochs ended at 45.1 to 46.7 % (19 epochs: 43.4 %).
    "quick_demo": dict(epochs=3, budget_s=130, batch_size=64, optimizer="lars", train_subset=2000, knn_test=0,
                       warmup_epochs=0.1, watch_images=500, watch_every=15, model=dict(width=32),
                       augment=dict(view_size=24), precise_bn=2000, save_every=30),
    # The 10-minute run is the same recipe for 9 minutes of training, which end within a visitor's 10, in batches
    # of 128: over 85 to 115 epochs they read 55.2 to 56.6 %, where batches of 64 read 54.8 to 55.8 % and of 256
    # 55.1 % (docs/recipes.md), and half the steps halve the optimiser's share of the time.
    "long_demo": dict(epochs=15, budget_s=540, batch_size=128, optimizer="lars", train_subset=2000, knn_test=0,
                      warmup_epochs=0.1, watch_images=500, watch_every=30, model=dict(width=32),
                      augment=dict(view_size=24), precise_bn=2000, save_every=30),
    # 30 minutes on a 2-core AVX-512-bf16 CPU: small batches with a low AdamW rate learn the most per
    # image seen at this budget (docs/recipes.md).
    "cpu30": dict(optimizer="adamw", lr=2e-3, batch_size=64, epochs=2, train_subset=42000, warmup_epochs=0.1),
    # An older default model: about 90 minutes on a 2-core AVX-512-bf16 CPU. The cpu30 recipe over the
    # whole training split for 7 epochs, with 24-px training views: they cost ~0.6x the compute of
    # 32-px ones, so the budget sees more pairs, and the fully-convolutional backbone still
    # evaluates on 32-px images (docs/recipes.md has the search that chose this).
    "cpu90": dict(optimizer="adamw", lr=2e-3, batch_size=64, epochs=7, warmup_epochs=0.5, augment=dict(view_size=24)),
    # The previous default (116 min on a 2-core AMX CPU, 75.4 % linear probe): multi-view VICReg
    # (vicreg.core.loss.multiview_loss), 4 views of 16 px per image from crops of 25-75 % of it, with LARS. In
    # equal-compute short runs (docs/recipes.md) LARS beat AdamW by 2 points and 4 x 16-px views beat the 24-px
    # pair by 2.6 more; 6 views, progressive resizing and AdamW with many views lost.
    "cpu150": dict(optimizer="lars", lr=0.3, batch_size=64, epochs=12, warmup_epochs=1,
                   augment=dict(views=4, view_size=16, scale=(0.25, 0.75))),
    # The shipped default (109 min on a 2-core AVX-512-bf16 CPU, 77.3 % linear probe): the cpu150 recipe for 18
    # epochs instead of 12, in about the same 2 hours thanks to the faster step (docs/benchmarks.md).
    "cpu120": dict(optimizer="lars", lr=0.3, batch_size=64, epochs=18, warmup_epochs=1,
                   augment=dict(views=4, view_size=16, scale=(0.25, 0.75))),
    # The paper's CIFAR-10 recipe shape (LARS, batch 128, 20 epochs by default; more on a GPU).
    "full": dict(),
    # The same recipe sized for one GPU: LARS at base lr 0.3 (x batch/256 = 0.3), wd 1e-4, batch 256 and a
    # 10-epoch warm-up, as the usual CIFAR-10 VICReg recipes train it. VICReg on CIFAR-10 keeps improving for
    # hundreds of epochs (those recipes train 1,000); 100 is a run one GPU finishes in a sitting, and about
    # 24x the compute of cpu90 (more than a day on a 2-core CPU), so it is meant for a GPU. No torch.compile:
    # ZeroGPU does not support it.
    "gpu": dict(optimizer="lars", batch_size=256, epochs=100, warmup_epochs=10),
}
QUICK = "quick_demo"  # the recipe a visitor may run and the app offers first
LONG_DEMO = "long_demo"  # the largest recipe a visitor may run: it ends within a visitor's 10 minutes
# The recipe that trained the shipped default model: its preset, run and checkpoint name
# (checkpoints/<name>.safetensors).
DEFAULT_MODEL = "cpu120"
