"""Typed run configuration (OmegaConf structured configs): defaults here, experiments list only what differs.

``load_config(path, overrides)`` merges the defaults, an experiment YAML and dotted command-line overrides
(``model.depth=30``). An unknown key, a value of the wrong type, an unknown activation / init name or a missing
file is a :class:`~delving.errors.DelvingError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from delving.errors import DelvingError, choices
from delving.init import MODES, PRESETS, SCHEMES
from delving.layers import ACTIVATIONS


@dataclass
class ModelConfig:
    name: str = "delving_plain"     # any model in timm's registry; delving_* after `import delving`
    activation: str = "relu"        # relu | prelu (channel-wise) | prelu_shared | leaky_relu | elu | selu | gelu
    #                                 | silu | tanh | softplus
    depth: Optional[int] = None     # weight layers (conv + fc), for models that take a depth
    drop_rate: Optional[float] = None  # dropout after fc1/fc2; None: the model's default (paper models 0.5, plain 0)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # any other argument of the model's builder


@dataclass
class InitConfig:
    scheme: str = "he"              # he (Eq. 10/14/15) | xavier (the paper's sqrt(1/n)) | glorot (xavier_normal_)
    #                                 | variance_preserving (any activation) | paper (A/B/C: he fan_out + fc stds)
    #                                 | lsuv (data-dependent: unit response std on one training batch)
    mode: str = "fan_in"            # fan_in (forward, Eq. 10) | fan_out (backward, Eq. 14)
    fc_std: Optional[List[float]] = None  # fixed stds of the last fc layers, e.g. [0.01, 0.01, 0.001] (A/B/C)
    prelu_factor: bool = True       # Eq. 15's (1 + a^2) with the slope of the following activation


@dataclass
class DataConfig:
    name: str = "digits"            # digits (embedded default) | ffcv (root/{train,val}.beton) | folder | random
    image_size: int = 16            # digits: upscale 8x8 to this; folder: crop size; random: smallest batch size
    batch_size: int = 64            # per process, or the total over all processes (see batch_size_is)
    batch_size_is: str = "per_process"  # per_process | total (the paper's 128 is a total over its 4-8 GPUs)
    val_fraction: float = 0.2       # digits: fixed, stratified train/val split
    split_seed: int = 0             # digits: the split does not move with the run's seed
    num_workers: int = 0
    root: Optional[str] = None      # folder: train/ and val/, one sub-folder per class; ffcv: train.beton, val.beton
    augmentation: str = "scale_jitter"  # folder: scale_jitter (Sec. 3) | single_scale (Table 2) | inception | none
    color_jitter: bool = False      # folder: random colour altering (the paper's [16]), as an option
    num_classes: Optional[int] = None  # random: label count (default 1000)
    max_image_size: Optional[int] = None  # random: each batch's size drawn in [image_size, max_image_size]
    samples: int = 64               # random: images per split
    os_cache: bool = True           # ffcv: read through the page cache (False: FFCV's own process cache)
    order: str = "random"           # ffcv: random | quasi_random (less disk, single process) | sequential
    order_seed: Optional[int] = None  # ffcv: shuffle seed, the same on every rank (default: the run's seed)


@dataclass
class OptimConfig:
    lr: float = 0.01                # Sec. 3: 1e-2 -> 1e-3 -> 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4      # on weights and biases, never on PReLU slopes (Sec. 2.1)
    schedule: str = "plateau"       # plateau (divide by 10 when val error stalls) | step (at milestones) | none
    milestones: List[int] = field(default_factory=list)  # epochs for schedule=step
    factor: float = 0.1
    patience: int = 3               # epochs without improvement before a plateau switch
    min_lr: float = 0.0             # plateau: never below this (the paper stops at 1e-4)
    gradient_clip_norm: Optional[float] = None  # not in the paper; see experiments/init_depth.yaml
    # torch's fused SGD kernel (one pass per tensor) where the device has one: the same update up to float rounding
    # (it can differ in the last bit), and 1.25-1.5x faster training steps on CPU, where the per-tensor SGD
    # allocates a copy of every gradient for the weight decay (README "Speed"). false: torch's default SGD.
    fused: bool = True


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "auto"       # cpu | gpu | auto (whatever is there)
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"          # auto | ddp | ddp_spawn ...
    precision: str = "32-true"      # 32-true | bf16-mixed | 16-mixed
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    fast_dev_run: bool = False
    deterministic: bool = False
    checkpoint_every_n_steps: Optional[int] = None  # also write last.ckpt every n steps (mid-epoch resume)
    # Speed switches (delving/speed.py), off by default for the reasons measured in README "Speed".
    channels_last: bool = False     # NHWC conv weights and activations
    inplace_activations: bool = False  # ReLU-family activations overwrite their input (needs log_variance=false)
    compile: bool = False           # torch.compile the model (inductor; needs a C++ compiler on CPU)


@dataclass
class TrackingConfig:
    wandb: str = "auto"             # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "delving"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    log_slopes: bool = True         # prelu/<layer> per epoch, histograms, end-of-run slope plot
    log_variance: bool = True       # variance_profile at init and after epoch 1 (variance.csv, W&B plot)


@dataclass
class RunConfig:
    name: Optional[str] = None      # run folder and W&B name; default: model-activation-init-depth-seed
    seed: int = 0
    out_dir: str = "runs"
    threads: Optional[int] = None   # torch intra-op threads; None leaves torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


LSUV = "lsuv"  # data-dependent (delving.lsuv): variance_preserving, then unit response std on one training batch
EXTENDS = "extends"  # an experiment YAML may build on another one
WANDB_MODES = ("auto", "online", "offline", "disabled")
SCHEDULES = ("plateau", "step", "none")
DATASETS = ("digits", "ffcv", "folder", "random")
ORDERS = ("random", "quasi_random", "sequential")
BATCH_SCOPES = ("per_process", "total")


def per_process_batch(data: "DataConfig", world_size: int) -> int:
    """The batch each process loads: ``data.batch_size``, or with ``batch_size_is=total`` its share of the total,
    which must divide by the number of processes (GPUs × nodes)."""
    if data.batch_size_is == "per_process":
        return data.batch_size
    if data.batch_size % world_size:
        raise DelvingError(f"data.batch_size={data.batch_size} is a total (data.batch_size_is=total) that does not "
                           f"divide by the {world_size} processes; use a multiple of {world_size}")
    return data.batch_size // world_size
AUGMENTATIONS = ("scale_jitter", "single_scale", "inception", "none")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- experiment YAML <- ``key=value`` overrides, checked against the schema and the registries."""
    layers = [OmegaConf.structured(RunConfig)]
    if path is not None:
        layers.append(_read_yaml(Path(path)))
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
    except (ConfigKeyError, ValidationError, OmegaConfBaseException) as err:
        raise DelvingError(_config_error_line(err, path)) from None
    run: RunConfig = OmegaConf.to_object(cfg)
    validate(run)
    return run


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise DelvingError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DelvingError(f"malformed YAML in {path}{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DelvingError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    base = data.pop(EXTENDS, None)
    config = OmegaConf.create(data)
    if base is None:
        return config
    # `extends: base.yaml` (relative to this file): the base's values first, this file's on top.
    return OmegaConf.merge(_read_yaml(path.parent / str(base)), config)


def _config_error_line(err: OmegaConfBaseException, path) -> str:
    key = getattr(err, "full_key", None) or ""
    source = f" (in {path} or the overrides)" if path else ""
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(OmegaConf.structured(RunConfig), parent) if parent else None
        valid = list(node.keys()) if isinstance(node, DictConfig) else list(RunConfig.__dataclass_fields__)
        return f"unknown config key {key!r}{source}; valid keys{' under ' + parent if parent else ''}: {choices(valid)}"
    message = str(err).splitlines()[0]
    return f"bad config value for {key!r}{source}: {message}"


def validate(cfg: RunConfig) -> None:
    """Check names against the registries before anything is built or trained."""
    _one_of("model.activation", cfg.model.activation, ACTIVATIONS)
    _one_of("init.scheme", cfg.init.scheme, [*SCHEMES, *PRESETS, LSUV])
    _one_of("init.mode", cfg.init.mode, MODES)
    _one_of("optim.schedule", cfg.optim.schedule, SCHEDULES)
    _one_of("tracking.wandb", cfg.tracking.wandb, WANDB_MODES)
    _one_of("data.name", cfg.data.name, DATASETS)
    _one_of("data.augmentation", cfg.data.augmentation, AUGMENTATIONS)
    _one_of("data.order", cfg.data.order, ORDERS)
    _one_of("data.batch_size_is", cfg.data.batch_size_is, BATCH_SCOPES)
    if isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 0:  # "auto" is only known once launched
        per_process_batch(cfg.data, cfg.trainer.devices * cfg.trainer.num_nodes)
    if cfg.trainer.inplace_activations and cfg.tracking.log_variance:  # it reads responses an in-place ReLU overwrote
        raise DelvingError("trainer.inplace_activations=true needs tracking.log_variance=false (the variance profile "
                           "reads each layer's response after the in-place activation has overwritten it)")
    if cfg.data.name == "folder" and not cfg.data.root:
        raise DelvingError("data.name=folder needs data.root (a folder with train/ and val/ class folders)")
    if cfg.data.name == "ffcv" and not cfg.data.root:
        raise DelvingError("data.name=ffcv needs data.root (a folder with train.beton and val.beton)")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise DelvingError(f"data.val_fraction={cfg.data.val_fraction} must be between 0 and 1")
    for key, value in (("optim.lr", cfg.optim.lr), ("data.batch_size", cfg.data.batch_size),
                       ("trainer.max_epochs", cfg.trainer.max_epochs),
                       ("trainer.checkpoint_every_n_steps", cfg.trainer.checkpoint_every_n_steps)):
        if value is not None and value <= 0:
            raise DelvingError(f"{key}={value} must be positive")


def _one_of(key: str, value, valid) -> None:
    if value not in valid:
        raise DelvingError(f"unknown {key} {value!r}; valid: {choices(valid)}")


def to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain containers (for W&B, checkpoints and config.yaml)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
