"""Dataclass configs: one place for every knob, JSON-serialisable so checkpoints can carry them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .presets import PRESETS
from .storage import default_checkpoint_dir, default_data_root

# Views per image at most: each is a backbone pass and a batch of activations held for the backward.
MAX_VIEWS = 32


@dataclass
class ModelConfig:
    # Projector widths after the 512-d backbone, as in the paper's "8192-8192-8192" notation.
    projector: str = "2048-2048-2048"
    # Channels of the backbone's first stage; each later stage doubles them (64-128-256-512: ResNet-18 itself).
    # A narrower ResNet-18 costs about (width/64)^2 of the compute per image, so on a CPU it takes several
    # times the steps in the same seconds: what a visitor's minutes need (presets.py).
    width: int = 64

    @property
    def backbone_dim(self) -> int:
        """The backbone's output features: its last stage's channels (512 for ResNet-18)."""
        return 8 * self.width

    def projector_dims(self) -> list[int]:
        try:
            dims = [int(d) for d in self.projector.split("-")]
        except ValueError:
            raise ValueError(f"projector must look like '2048-2048-2048', got {self.projector!r}") from None
        if not dims or min(dims) < 1:
            raise ValueError(f"projector widths must be positive, got {self.projector!r}")
        return dims


@dataclass
class LossConfig:
    inv_coeff: float = 25.0
    var_coeff: float = 25.0
    cov_coeff: float = 1.0
    eps: float = 1e-4


@dataclass
class AugmentConfig:
    size: int = 32  # the images' stored size (dataset decode, evaluation, the app)
    # Side of the training views; 0 = `size`. Smaller views cost (view/size)^2 of the compute per
    # pair, and RandomResizedCrop already shows the network objects at many scales, so a
    # fully-convolutional backbone trained on smaller views still evaluates at full size.
    view_size: int = 0
    # Views of each image per training step. 2 is the paper's pair (the default, unchanged); more views,
    # usually small ones (view_size, scale), follow EMP-SSL's many crops per image with VICReg's own loss
    # over all of them (vicreg.core.loss.multiview_loss). Each view costs a backbone pass.
    views: int = 2
    # Of those views, how many are at the images' full size (`size`) rather than view_size: 2 with views=6 and
    # view_size=16 trains 2 x 32 px + 4 x 16 px views of each image (multi-crop: two large views, the rest small
    # and cheap). 0: every view at view_size.
    full_views: int = 0
    # Progressive resizing: "16-24-32" trains the run's epochs in equal parts at these view sides, small
    # cheap views first and the evaluation's own size last (so the last epochs see objects at the scale
    # evaluation shows them). Empty: view_size throughout.
    view_sizes: str = ""
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    # brightness, contrast, saturation, hue (torchvision ColorJitter semantics)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    # Symmetric 0.1 per view (CIFAR recipes) rather than the official ImageNet 0 / 0.2: the official
    # asymmetry pairs with an asymmetric blur we do not use at 32 px, and the loss is symmetric in
    # the two views, so exchangeable views keep the same total solarisation rate (0.2 per pair)
    # without making view 1 and view 2 statistically different.
    solarize_p: float = 0.1
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

    def view_sides(self) -> list[int]:
        """The progressive-resizing schedule `view_sizes` ("16-24-32") as sides, [] without one; the one
        place that reads that string, so a bad one fails the same way everywhere."""
        parts = self.view_sizes.split("-") if self.view_sizes else []
        if not all(p.isdigit() and 0 < int(p) <= self.size for p in parts):
            raise ValueError(f"augment.view_sizes must be view sides from 1 to {self.size} joined by '-' "
                             f"(e.g. 16-24-32), got {self.view_sizes!r}")
        return [int(p) for p in parts]

    def view_side(self, epoch: int | None = None, epochs: int = 1) -> int:
        """The training views' side in epoch `epoch` (0-based) of `epochs`; without an epoch, the last one
        (what Explore shows as a training view)."""
        if sides := self.view_sides():
            return sides[-1 if epoch is None else min(len(sides) - 1, epoch * len(sides) // max(epochs, 1))]
        return self.view_size or self.size

    def sides(self, n: int, side: int) -> list[int]:
        """The side of each of `n` views drawn together: the first full_views at the images' own size, the rest at
        `side` (the one place that says which views are full size)."""
        return [self.size if i < self.full_views else side for i in range(n)]


@dataclass
class TrainConfig:
    epochs: int = 20
    # Seconds of training the run is sized to: a fresh run times a few steps and sets `epochs` to fit
    # (vicreg/training/budget.py), so a demo ends on time on any CPU; 0 = `epochs` as given.
    budget_s: float = 0.0
    batch_size: int = 128
    optimizer: str = "lars"  # "lars" or "adamw"
    lr: float | None = None  # base lr, scaled by batch/256; None picks the optimizer's default
    weight_decay: float | None = None
    warmup_epochs: float = 2.0
    lars_eta: float = 0.02
    momentum: float = 0.9
    min_lr_ratio: float = 0.001  # cosine decays to lr * this
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    precision: str = "auto"  # "auto", "bf16", "fp32"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False  # torchrun runs: SyncBatchNorm in the backbone too (the projector's BN is always synced)
    train_subset: int | None = None  # train on the first N images (quick demos, tests)
    knn_train: int = 5000  # per-epoch kNN monitor: bank size taken from train
    knn_test: int = 1000  # and queries taken from test; 0 disables it
    # The learning monitor (vicreg/training/watch.py): Explore's guess over this many test images, each guessed from the
    # others, before the first step, every `watch_every` seconds of training and after the last; 0 = off.
    watch_images: int = 0
    watch_every: float = 20.0
    # Clean training images whose forward pass re-estimates the backbone's BatchNorm statistics when the run finishes
    # (vicreg/training/precise_bn.py: the training views' statistics misfit the clean 32-px images evaluation embeds);
    # 0 keeps the training views' statistics. Off by default: only a short demo gained from it (docs/recipes.md).
    precise_bn: int = 0
    # Seconds between the checkpoints written at the end of epochs; 0 = every epoch. The last epoch and a stop always
    # save. A demo's epochs take seconds, and saving at each took about 4 % of the Quick demo's time (docs/recipes.md).
    save_every: float = 0.0
    log_every: int = 0  # 0 = auto: every step on CPU, every 25 steps on GPU (each read-back syncs)
    threads: int = 0  # 0 = the CPUs this process may use (vicreg.core.runtime.available_cpus)
    data: str = field(default_factory=default_data_root)
    name: str = "vicreg_model"
    checkpoint_dir: str = field(default_factory=default_checkpoint_dir)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def base_lr(self) -> float:
        return self.lr if self.lr is not None else {"lars": 0.3, "adamw": 1e-3}[self.optimizer]

    def scaled_lr(self) -> float:
        return self.base_lr() * self.batch_size / 256

    def wd(self) -> float:
        return self.weight_decay if self.weight_decay is not None else {"lars": 1e-4, "adamw": 1e-5}[self.optimizer]

    def validate(self) -> "TrainConfig":
        if self.optimizer not in ("lars", "adamw"):
            raise ValueError(f"optimizer must be 'lars' or 'adamw', got {self.optimizer!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (variance needs two samples), got {self.batch_size}")
        weights = (self.loss.inv_coeff, self.loss.var_coeff, self.loss.cov_coeff)
        if min(weights) < 0:
            raise ValueError(f"loss weights must be 0 or positive, got invariance {weights[0]}, variance {weights[1]}, "
                             f"covariance {weights[2]}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive (or unset for the optimizer's default), got {self.lr}")
        if self.train_subset is not None and self.train_subset < 0:
            raise ValueError(f"train_subset must be 0 (all images) or more, got {self.train_subset}")
        if self.budget_s < 0:
            raise ValueError(f"budget_s must be 0 (off) or a number of seconds, got {self.budget_s}")
        if self.watch_images < 0 or self.watch_images == 1 or self.watch_every < 0:
            raise ValueError(f"watch_images must be 0 (off) or at least 2 and watch_every 0 or more seconds, got "
                             f"{self.watch_images} and {self.watch_every}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be 0 (every epoch) or a number of seconds, got {self.save_every}")
        if self.precise_bn < 0:
            raise ValueError(f"precise_bn must be 0 (off) or a number of training images, got {self.precise_bn}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be 0 or more, got {self.warmup_epochs}")
        if self.augment.view_size < 0 or self.augment.view_size > self.augment.size:
            raise ValueError(f"augment.view_size must be 0 (= size) or at most {self.augment.size}, "
                             f"got {self.augment.view_size}")
        self.augment.view_sides()
        if not 2 <= self.augment.views <= MAX_VIEWS:
            raise ValueError(f"augment.views must be between 2 and {MAX_VIEWS} (VICReg compares at least two views of "
                             f"each image), got {self.augment.views}")
        if not 0 <= self.augment.full_views <= self.augment.views:
            raise ValueError(f"augment.full_views must be between 0 and views ({self.augment.views}), "
                             f"got {self.augment.full_views}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.model.width < 1:
            raise ValueError(f"model.width must be a positive number of channels (64: ResNet-18), "
                             f"got {self.model.width}")
        self.model.projector_dims()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _updated(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with some fields replaced as given (no conversion: `with_values` is the public way to set fields);
        nested configs take a dict of their own fields, as PRESETS write them."""
        d = self.to_dict()
        for key, value in overrides.items():
            if key not in d:
                raise ValueError(f"unknown config field {key!r}")
            if isinstance(d[key], dict):
                if unknown := set(value) - set(d[key]):
                    raise ValueError(f"unknown {key} field(s): {', '.join(sorted(unknown))}")
                value = {**d[key], **value}
            d[key] = value
        return TrainConfig.from_dict(d)

    # Fields where 0 stands for "unset" (None) when set by name: lr (the optimizer's default) and train_subset
    # (all images). The one place for that rule: the CLI's options and the app's knobs both go through it.
    ZERO_IS_UNSET: ClassVar[tuple[str, ...]] = ("lr", "train_subset")

    def get(self, dotted: str) -> Any:
        """A field by its dotted name ("epochs", "loss.var_coeff")."""
        head, _, leaf = dotted.rpartition(".")
        owner: Any = self.get(head) if head else self
        if not dataclasses.is_dataclass(owner) or leaf not in {f.name for f in dataclasses.fields(owner)}:
            raise ValueError(f"unknown config field {dotted!r}")
        return getattr(owner, leaf)

    def shown(self, names: Any) -> dict[str, Any]:
        """{dotted name: value} as a form shows them: 0 for an unset ZERO_IS_UNSET field."""
        return {n: 0 if n in self.ZERO_IS_UNSET and self.get(n) is None else self.get(n) for n in names}

    def with_values(self, values: Mapping[str, Any]) -> "TrainConfig":
        """A copy with fields set by dotted name ({"epochs": 3, "loss.var_coeff": 0}): each value converted to
        its field's type (a form's 3.0 for an int field is 3), and 0 in a ZERO_IS_UNSET field means None. Epochs
        other than a time-budgeted recipe's own turn its budget off (the command line's, the form's, a search's)."""
        if self.budget_s and "budget_s" not in values and "epochs" in values:
            if self._typed("epochs", values["epochs"]) != self.epochs:  # other epochs asked for: not the time budget
                values = {**values, "budget_s": 0.0}
        nested: dict[str, Any] = {}
        for dotted, value in values.items():
            head, _, tail = dotted.partition(".")
            if tail:
                nested.setdefault(head, {})[tail] = self._typed(dotted, value)
            else:
                nested[head] = self._typed(dotted, value)
        return self._updated(nested)

    def _typed(self, dotted: str, value: Any) -> Any:
        current = self.get(dotted)  # an unknown name fails here
        if dotted in self.ZERO_IS_UNSET and not value:
            return None
        head, _, leaf = dotted.rpartition(".")
        owner = self.get(head) if head else self
        kind = next(f.type for f in dataclasses.fields(owner) if f.name == leaf)
        base = (kind if isinstance(kind, str) else getattr(kind, "__name__", "")).replace(" | None", "")
        if isinstance(current, tuple) and value is not None:  # (lo, hi): a pair, or text as the command line has it
            parts = value.split(":") if isinstance(value, str) else list(value)
            try:
                lo, hi = (float(v) for v in parts)
            except (TypeError, ValueError):
                raise ValueError(f"{dotted} must be two numbers as lo:hi (e.g. 0.2:1.0), got {value!r}") from None
            return lo, hi
        if value is None or isinstance(current, bool) or base not in ("int", "float", "str"):
            return value
        try:
            number = float(value) if base != "str" else None
        except (TypeError, ValueError):
            raise ValueError(f"{dotted} must be a number, got {value!r}") from None
        if base == "int" and not number.is_integer():
            raise ValueError(f"{dotted} must be a whole number, got {value!r}")
        return str(value) if base == "str" else int(number) if base == "int" else number

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "TrainConfig":
        """The named recipe; its run name is the preset's name unless `overrides` give one."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        return cls()._updated({"name": preset, **PRESETS[preset], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        for key, klass in {"model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig}.items():
            if isinstance(d.get(key), dict):
                known = {f.name for f in dataclasses.fields(klass)}
                d[key] = klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items() if k in known})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
