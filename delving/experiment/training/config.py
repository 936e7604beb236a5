"""Typed run configuration (OmegaConf structured configs): defaults here, experiments list only what differs.

``load_config(path, overrides)`` merges the defaults, an experiment YAML and dotted command-line overrides
(``model.depth=30``). An unknown key, a value of the wrong type, an unknown activation / init name or a missing
file is a :class:`~delving.errors.DelvingError` with a one-line message.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from delving.errors import DelvingError, choices
from delving.experiment.training.trainer_extra import check_trainer_extra
from delving.nn.init import MODES, PRESETS, SCHEMES, TAT, WEIGHTS
from delving.nn.activations import ACTIVATIONS


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
    # scheme=tat: target C_f(0) of the whole chain (Zhang et al. 2022), in (0, 1); null: by init.weights, 0.8 for
    # gaussian (on 100-layer nets it generalized better than TAT's 0.9: docs/beyond-the-paper.md), 0.9 for
    # delta_orthogonal (delving.nn.init.TAT_ETA)
    tat_eta: Optional[float] = None
    weights: str = "gaussian"       # gaussian (the paper) | delta_orthogonal (Xiao et al. 2018; odd kernels only)


@dataclass
class DataConfig:
    name: str = "digits"            # digits (embedded default) | mnist5k (5,000 MNIST digits, embedded) | ffcv
    #                                 (root/{train,val}.beton) | folder | random
    # digits: upscale 8x8 to this; mnist5k: resize 28x28 to this; folder: crop size; random: smallest batch size.
    # null: the dataset's own size (IMAGE_SIZES), filled in when the config is loaded (config.yaml records it).
    image_size: Optional[int] = None
    batch_size: int = 64            # per process, or the total over all processes (see batch_size_is)
    batch_size_is: str = "per_process"  # per_process | total (the paper's 128 is a total over its 4-8 GPUs)
    val_fraction: float = 0.2       # digits, mnist5k: fixed, stratified train/val split
    split_seed: int = 0             # digits, mnist5k: the split does not move with the run's seed
    translate: int = 0              # mnist5k: random shift of each training image by up to this many pixels, black
    #                                 fill, seeded by (seed, epoch, index); 0: off. In [0, image_size)
    num_workers: int = 0            # loader worker processes (ffcv: decoding threads, 0 = the usable CPUs)
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
    momentum: float = 0.9           # Sec. 3; in [0, 1)
    weight_decay: float = 5e-4      # on weights and biases, never on PReLU slopes (Sec. 2.1)
    schedule: str = "plateau"       # plateau (divide by 10 when val error stalls) | step (at milestones) | none
    milestones: List[int] = field(default_factory=list)  # epochs for schedule=step
    factor: float = 0.1             # the LR's multiplier at each switch, in (0, 1)
    patience: int = 3               # epochs without improvement before a plateau switch
    min_lr: float = 0.0             # plateau: never below this (the paper stops at 1e-4)
    gradient_clip_norm: Optional[float] = None  # not in the paper; see experiments/init_depth.yaml
    # torch's fused SGD kernel (one pass per tensor) where the device has one: the same update up to float rounding
    # (it can differ in the last bit), and 1.25-1.5x faster training steps on CPU, where the per-tensor SGD
    # allocates a copy of every gradient for the weight decay (README "Speed"). false: torch's default SGD.
    fused: bool = True


@dataclass
class TrainerConfig:
    max_epochs: int = 10            # >= 1
    accelerator: str = "auto"       # cpu | gpu | auto (whatever is there)
    devices: Any = 1                # how many (>= 1), -1 or auto (every one), or which: [0, 1] / "0,1"
    num_nodes: int = 1              # machines (each with `devices` processes)
    strategy: str = "auto"          # auto | ddp | ddp_spawn ...
    precision: str = "32-true"      # 32-true | bf16-mixed | 16-mixed
    num_sanity_val_steps: int = 0   # validation batches before training (-1: all)
    log_every_n_steps: int = 10     # >= 1
    enable_progress_bar: bool = True
    limit_train_batches: Optional[float] = None  # a fraction in (0, 1] of the batches, or a whole number of them
    limit_val_batches: Optional[float] = None    # as limit_train_batches
    fast_dev_run: bool = False
    deterministic: bool = False
    checkpoint_every_n_steps: Optional[int] = None  # also write last.ckpt every n steps (mid-epoch resume)
    # Speed switches (delving/experiment/training/speed.py), off by default for the reasons measured in README "Speed".
    channels_last: bool = False     # NHWC conv weights and activations
    inplace_activations: bool = False  # ReLU-family activations overwrite their input (needs log_variance=false)
    compile: bool = False           # torch.compile the model (inductor; needs a C++ compiler on CPU)
    # any other argument of lightning.Trainer, e.g. {accumulate_grad_batches: 2, val_check_interval: 0.5}
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    wandb: str = "auto"             # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "delving"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    log_slopes: bool = True         # prelu/<layer> per epoch, histograms, end-of-run slope plot
    log_variance: bool = True       # variance_profile at init and after epoch 1 (variance.csv, W&B plot)
    log_model: Any = False          # checkpoints as W&B artifacts: false | last (end of training) | all (each one)


@dataclass
class RunConfig:
    name: Optional[str] = None      # run folder and W&B name; default: model-activation-init-depth-seed
    seed: int = 0                   # in [0, 2^32 - 1]; model init, data order and augmentation
    out_dir: str = "runs"           # the run folder is out_dir/name
    threads: Optional[int] = None   # torch intra-op threads; None leaves torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


LSUV = "lsuv"  # data-dependent (delving.nn.lsuv): variance_preserving, then unit response std on one training batch
EXTENDS = "extends"  # an experiment YAML may build on another one
WANDB_MODES = ("auto", "online", "offline", "disabled")
SCHEDULES = ("plateau", "step", "none")
DATASETS = ("digits", "ffcv", "folder", "mnist5k", "random")
# data.image_size=null per dataset: mnist5k's native 28x28; 16 for the others (digits' upscale target, the key's default
# before null existed, so no other dataset's runs change)
IMAGE_SIZES = {"mnist5k": 28}
DEFAULT_IMAGE_SIZE = 16
TRANSLATING = ("mnist5k",)  # the data modules that implement data.translate
ORDERS = ("random", "quasi_random", "sequential")
BATCH_SCOPES = ("per_process", "total")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")  # lightning.Trainer's accelerator names
PRECISIONS = ("64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16")  # lightning.Trainer's precision names
TAT_ACTIVATIONS = ("prelu", "prelu_shared", "leaky_relu")  # the activations with a negative slope TAT can set


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
    _check_blank_overrides(overrides or [])
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
    except (ConfigKeyError, ValidationError, OmegaConfBaseException) as err:
        raise DelvingError(_config_error_line(err, path)) from None
    run: RunConfig = OmegaConf.to_object(cfg)
    if run.data.image_size is None:
        run.data.image_size = IMAGE_SIZES.get(run.data.name, DEFAULT_IMAGE_SIZE)
    validate(run)
    return run


def _check_blank_overrides(overrides: list[str]) -> None:
    """``name=`` with nothing after '=' is an error: OmegaConf reads it as null, which for ``name`` (or any key with
    a default) would silently run the default instead of what was meant."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and not value.strip():
            raise DelvingError(f"{key}= has no value; valid: {key}=VALUE (leave the override out for the default)")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """One experiment YAML with the files it ``extends`` merged below it; ``chain`` holds the files that extend
    this one, to report a cycle instead of recursing for ever."""
    if path.is_dir():
        raise DelvingError(f"config file {path} is a directory; give a YAML file")
    if not path.is_file():
        raise DelvingError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved):], resolved))
        raise DelvingError(f"'{EXTENDS}:' cycle: {cycle}; a file cannot extend itself, directly or through others")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DelvingError(f"malformed YAML in {path}{where}: {getattr(err, 'problem', err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DelvingError(f"cannot read config file {path}: {getattr(err, 'strerror', None) or err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DelvingError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    base = data.pop(EXTENDS, None)
    config = OmegaConf.create(data)
    if base is None:
        return config
    # `extends: base.yaml` (relative to this file): the base's values first, this file's on top.
    return OmegaConf.merge(_read_yaml(path.parent / str(base), (*chain, resolved)), config)


def _did_you_mean(word: str, valid) -> str:
    """`` (did you mean 'x'?)`` for a near miss (difflib's ratio >= 0.6), else nothing."""
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _config_error_line(err: OmegaConfBaseException, path) -> str:
    key = getattr(err, "full_key", None) or ""
    source = f" (in {path} or the overrides)" if path else ""
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(OmegaConf.structured(RunConfig), parent) if parent else None
        valid = list(node.keys()) if isinstance(node, DictConfig) else list(RunConfig.__dataclass_fields__)
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)  # the leaf alone: a shared prefix
        hint = f" (did you mean {(parent + '.' if parent else '') + close[0]!r}?)" if close else ""  # is no likeness
        return (f"unknown config key {key!r}{hint}{source}; valid keys{' under ' + parent if parent else ''}: "
                f"{choices(valid)}")
    message = str(err).splitlines()[0]
    return f"bad config value for {key!r}{source}: {message}"


def validate(cfg: RunConfig) -> None:
    """Check every value before anything is built, written or trained: names against the registries, numbers
    against their ranges (finite only), and the bounds that keep a run from exhausting the machine."""
    _one_of("model.activation", cfg.model.activation, ACTIVATIONS)
    _one_of("init.scheme", cfg.init.scheme, [*SCHEMES, *PRESETS, LSUV])
    _one_of("init.mode", cfg.init.mode, MODES)
    _one_of("init.weights", cfg.init.weights, WEIGHTS)
    if cfg.init.tat_eta is not None and not 0.0 < cfg.init.tat_eta < 1.0:
        raise DelvingError(f"init.tat_eta={cfg.init.tat_eta} must be between 0 and 1 (exclusive); valid: null or a "
                           f"number in (0, 1)")
    if cfg.init.scheme == TAT and cfg.model.activation not in TAT_ACTIVATIONS:
        raise DelvingError(f"init.scheme=tat sets a leaky slope from the depth, and model.activation="
                           f"{cfg.model.activation} has none; valid: {choices(TAT_ACTIVATIONS)}")
    _one_of("optim.schedule", cfg.optim.schedule, SCHEDULES)
    _one_of("tracking.wandb", cfg.tracking.wandb, WANDB_MODES)
    _one_of("tracking.log_model", str(cfg.tracking.log_model).lower(), ("false", "last", "all"))
    _one_of("data.name", cfg.data.name, DATASETS)
    _one_of("data.augmentation", cfg.data.augmentation, AUGMENTATIONS)
    _one_of("data.order", cfg.data.order, ORDERS)
    _one_of("data.batch_size_is", cfg.data.batch_size_is, BATCH_SCOPES)
    _one_of("trainer.accelerator", cfg.trainer.accelerator, ACCELERATORS)
    _one_of("trainer.precision", cfg.trainer.precision, PRECISIONS)
    _check_ranges(cfg)
    _check_model(cfg.model)
    _check_devices(cfg.trainer.devices)
    for key in ("limit_train_batches", "limit_val_batches"):
        _check_limit(f"trainer.{key}", getattr(cfg.trainer, key))
    check_trainer_extra(cfg.trainer.extra)
    _check_name(cfg.name)
    if isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 0:  # "auto" is only known once launched
        per_process_batch(cfg.data, cfg.trainer.devices * cfg.trainer.num_nodes)
    if cfg.trainer.inplace_activations and cfg.tracking.log_variance:  # it reads responses an in-place ReLU overwrote
        raise DelvingError("trainer.inplace_activations=true needs tracking.log_variance=false (the variance profile "
                           "reads each layer's response after the in-place activation has overwritten it)")
    if cfg.data.name == "folder" and not cfg.data.root:
        raise DelvingError("data.name=folder needs data.root (a folder with train/ and val/ class folders)")
    if cfg.data.name == "ffcv" and not cfg.data.root:
        raise DelvingError("data.name=ffcv needs data.root (a folder with train.beton and val.beton)")
    if cfg.data.root and Path(cfg.data.root).exists() and not Path(cfg.data.root).is_dir():
        raise DelvingError(f"data.root={cfg.data.root} is a file; give a folder")
    _check_translate(cfg.data)
    if cfg.data.max_image_size is not None and cfg.data.max_image_size < cfg.data.image_size:
        raise DelvingError(f"data.max_image_size={cfg.data.max_image_size} is below data.image_size="
                           f"{cfg.data.image_size}; valid: null or >= data.image_size")


def _check_translate(data: DataConfig) -> None:
    """``data.translate``: a whole number of pixels in [0, image_size), on a data module that shifts its images."""
    if isinstance(data.translate, bool) or not isinstance(data.translate, int) or \
            not 0 <= data.translate < data.image_size:
        raise DelvingError(f"data.translate={data.translate!r} is out of range; valid: an integer in "
                           f"[0, {data.image_size - 1}] (pixels, below data.image_size={data.image_size})")
    if data.translate and data.name not in TRANSLATING:
        raise DelvingError(f"data.translate={data.translate} is not implemented for data.name={data.name}; "
                           f"valid: 0, or data.name in {choices(TRANSLATING)}")


# Every number of the schema: (key, interval, None allowed). Intervals in the usual notation, "[0, 1)" or "> 0";
# finite values only. Seeds are numpy's (32-bit unsigned).
MAX_IMAGE_SIZE = 4096  # pixels per side: a float batch of 64 such images is already 12 GB
UINT32 = f"[0, {2**32 - 1}]"
RANGES = (
    ("seed", UINT32, False), ("threads", "[1, 4096]", True),
    ("model.drop_rate", "[0, 1)", True),
    ("data.image_size", f"[1, {MAX_IMAGE_SIZE}]", False), ("data.batch_size", ">= 1", False),
    ("data.val_fraction", "(0, 1)", False), ("data.split_seed", UINT32, False),
    ("data.num_workers", ">= 0", False), ("data.num_classes", ">= 1", True),
    ("data.max_image_size", f"[1, {MAX_IMAGE_SIZE}]", True), ("data.samples", ">= 1", False),
    ("data.order_seed", UINT32, True),
    ("optim.lr", "> 0", False), ("optim.momentum", "[0, 1)", False),  # momentum 1 would never forget a gradient
    ("optim.weight_decay", ">= 0", False), ("optim.factor", "(0, 1)", False),
    ("optim.patience", ">= 0", False), ("optim.min_lr", ">= 0", False),
    ("optim.gradient_clip_norm", "> 0", True),
    ("trainer.max_epochs", ">= 1", False), ("trainer.num_nodes", ">= 1", False),
    ("trainer.num_sanity_val_steps", ">= -1", False), ("trainer.log_every_n_steps", ">= 1", False),
    ("trainer.checkpoint_every_n_steps", ">= 1", True),
)


def _check_ranges(cfg: RunConfig) -> None:
    for key, interval, nullable in RANGES:
        value = _get(cfg, key)
        if value is None and nullable:
            continue
        _check_number(key, value, interval, "null or " if nullable else "")
    for i, epoch in enumerate(cfg.optim.milestones):
        _check_number(f"optim.milestones[{i}]", epoch, ">= 1")
    for i, std in enumerate(cfg.init.fc_std or []):
        _check_number(f"init.fc_std[{i}]", std, "> 0")


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_number(key: str, value, interval: str, prefix: str = "") -> None:
    """``value`` must be a finite number inside ``interval`` ("[0, 1)", "(0, 1]", "> 0", ">= 1")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DelvingError(f"{key}={value!r} must be a finite number; valid: {prefix}{interval}")
    if not _inside(value, interval):
        problem = "must be positive" if interval in ("> 0", ">= 1") else "is out of range"
        raise DelvingError(f"{key}={value!r} {problem}; valid: {prefix}{interval}")


def _inside(value: float, interval: str) -> bool:
    if interval[0] in "<>":
        op, bound = interval.split()
        return value >= float(bound) if op == ">=" else value > float(bound)
    low, high = (float(b) for b in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


# Plain nets: a 2000-layer net of 64-channel convs is 74M weights and minutes per step on a CPU; beyond it a
# typo (100000) would allocate for minutes before failing.
MAX_DEPTH = 2000


def _check_model(model: ModelConfig) -> None:
    """The depth a model can be built with, before any cell of a sweep trains (Table 1 / Fig. 3's plain nets)."""
    if model.depth is None:
        return
    if model.name == "delving_plain":
        from delving.models.plain import MIN_DEPTH, STAGE2_CONVS

        if model.depth < MIN_DEPTH:
            raise DelvingError(f"model.depth={model.depth} is too small for delving_plain; valid: an integer in "
                               f"[{MIN_DEPTH}, {MAX_DEPTH}] (conv1 + {STAGE2_CONVS} stage-2 convs + >= 1 stage-3 "
                               f"conv + 3 fc)")
    if not 1 <= model.depth <= MAX_DEPTH:
        raise DelvingError(f"model.depth={model.depth} is out of range; valid: null or an integer in [1, {MAX_DEPTH}] "
                           f"(the bound keeps a typo from building a net that exhausts the machine)")


def _check_devices(devices) -> None:
    """Lightning's ``devices``: an int >= 1 (how many), -1 or "auto" (all), a list of indices or "0,1"."""
    if devices in ("auto", -1):
        return
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return
    if isinstance(devices, str) and devices.replace(",", "").replace(" ", "").isdigit():
        return
    if isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) and d >= 0 for d in devices):
        return
    raise DelvingError(f"trainer.devices={devices!r} is not valid; valid: an integer >= 1, -1 or 'auto' (every "
                       f"device), a list of device indices or a string like '0,1'")


def _check_limit(key: str, value) -> None:
    """Lightning's ``limit_*_batches``: a fraction in (0, 1] of the batches, or a whole number of batches."""
    valid = "null, a fraction in (0, 1] of the batches or a whole number of batches >= 1"
    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (value > 1.0 and not float(value).is_integer()):
        raise DelvingError(f"{key}={value} is not valid; valid: {valid}")


def _check_name(name: str | None) -> None:
    """A run's name is one folder under out_dir: no separators, no '.'/'..', not empty."""
    if name is None:
        return
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DelvingError(f"name={name!r} is not a folder name; valid: a non-empty name without '/' (the run's "
                           f"folder under out_dir)")


def _one_of(key: str, value, valid) -> None:
    if value not in valid:
        raise DelvingError(f"unknown {key} {value!r}{_did_you_mean(value, valid)}; valid: {choices(valid)}")


def to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain containers (for W&B, checkpoints and config.yaml)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
