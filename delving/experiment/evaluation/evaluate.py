"""``delving evaluate``: the paper's test protocols on a trained checkpoint, top-1 and top-5 error (Sec. 3 "Testing").

Protocols (the image at full resolution is normalized as in training; see :mod:`delving.data.full`):

- ``center``: the run's own validation pipeline, unchanged (ImageNet: shorter side 256, centre 224 crop; digits:
  the 16×16 image itself), so its error equals the validation error the run reported.
- ``10view``: AlexNet's test used by Tables 2 and 5: each image resized to shorter side ``s`` (the paper: 256),
  four corner crops and the centre crop of the training crop size, and their mirrors; softmax averaged over the
  10 views (:func:`delving.experiment.evaluation.views.ten_crop_boxes`).
- ``dense``: "multi-view testing on feature maps" (Sec. 3, after SPP-net): the whole image at shorter side ``s``
  and its mirror go through the conv layers once; every window of the last conv map the size that a training crop
  produces (model A at 224: 14×14; the digits plain net at 16: its own 4×4 map) goes through SPP and the fc
  layers; softmax averaged over windows and both mirrors. Several scales (Table 4's "multi-scale") average the
  per-scale scores, each scale weighing the same; the record also gives each scale alone.

Scales are shorter sides in pixels of the evaluated images. Defaults follow the paper in proportion to the
training crop c: ``round(c·s/224)`` for the paper's s (10-view: 256; dense: 256, 384, 480 combined), i.e. 256, 384,
480 at c = 224 and 18, 27, 34 for the 16×16 digits. A scale must be at least c (10-view crops must fit; a dense
map smaller than the window would be a single clipped window).

Checkpoints: a run's file (``runs/NAME/checkpoints/last.ckpt``) or a W&B model artifact,
``wandb:ENTITY/PROJECT/ARTIFACT:ALIAS`` (a run trained with ``tracking.log_model``: ``model-<run id>:latest``),
downloaded through ``wandb.Api().artifact`` to W&B's artifact folder, which then stands for the run folder.

Output: ``<run>/eval/<protocol>[-<scales>].json`` (or ``--out``) and one W&B run in the run's project and group
(``job_type=eval``; offline unless logged in, as training).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2.functional import resize

from delving.experiment.training.config import LSUV, RunConfig, load_config, to_dict, validate
from delving.data.full import full_val_images, same_size_batches
from delving.errors import DelvingError, choices
from delving.experiment.training.system import DelvingSystem
from delving.experiment.rundir.run_dir import RunDir, write_json
from delving.experiment.training.loggers import run_tags, wandb_mode
from delving.experiment.training.train import build_datamodule, build_model
from delving.experiment.evaluation.views import dense_windows, ten_crop_boxes

PROTOCOLS = ("center", "10view", "dense")
PAPER_CROP = 224
PAPER_SCALES = {"10view": (256,), "dense": (256, 384, 480)}  # Table 2 / Table 5; Table 4
WINDOWS_PER_CALL = 512  # dense: windows per fc pass, to bound memory on large maps (model A at 480: ~460 per map)
WANDB_PREFIX = "wandb:"
ARTIFACT_REF = re.compile(r"[^/:\s]+/[^/:\s]+/[^/:\s]+:[^/:\s]+")  # ENTITY/PROJECT/ARTIFACT:ALIAS


def resolve_checkpoint(ckpt: str | Path, api=None) -> Path:
    """A local checkpoint path as it is; ``wandb:ENTITY/PROJECT/ARTIFACT:ALIAS`` downloaded (``api``: a
    ``wandb.Api()``, default a new one) and its ``.ckpt`` file returned. Any failure is a one-line error."""
    text = str(ckpt)
    if not text.startswith(WANDB_PREFIX):
        return Path(ckpt)
    ref = text[len(WANDB_PREFIX):]
    if not ARTIFACT_REF.fullmatch(ref):
        raise DelvingError(f"bad --ckpt {text!r}; valid: wandb:ENTITY/PROJECT/ARTIFACT:ALIAS, e.g. "
                           f"wandb:me/delving/model-1a2b3c4d:latest")
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        folder = Path(api.artifact(ref, type="model").download())
    except Exception as err:  # noqa: BLE001 - no login, no network, no such artifact: one line
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DelvingError(f"cannot fetch W&B artifact {ref!r} ({type(err).__name__}: {detail}); check the "
                           f"entity, project, artifact name and alias, and `wandb login`") from None
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise DelvingError(f"W&B artifact {ref!r} has no .ckpt file (in {folder}); valid: a model artifact logged "
                           f"by a run with tracking.log_model")
    return found[0]


# ------------------------------------------------------------------------------------------- loading a run


def load_run(ckpt: str | Path, device: torch.device) -> tuple[RunConfig, torch.nn.Module, object]:
    """The run's config, its model with the checkpoint's weights (eval mode, on ``device``) and its datamodule."""
    path = Path(ckpt)
    if not path.is_file():
        raise DelvingError(f"checkpoint not found: {path} (a run's {RunDir.CHECKPOINTS}/{RunDir.LAST})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad path
        raise DelvingError(f"cannot read checkpoint {path}: {type(err).__name__}") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise DelvingError(f"{path} is not a Lightning checkpoint of a delving run (no state_dict)")
    cfg = _run_config(state.get("hyper_parameters", {}).get("config"), path)
    datamodule = build_datamodule(cfg)
    # The weights come from the checkpoint: skip LSUV's pass over a training batch (its init is overwritten).
    build_cfg = replace(cfg, init=replace(cfg.init, scheme="variance_preserving")) if cfg.init.scheme == LSUV else cfg
    model = build_model(build_cfg, datamodule)
    system = DelvingSystem(model, cfg.optim, datamodule.num_classes, config=to_dict(cfg))
    _load_weights(system, state["state_dict"], path)
    return cfg, model.to(device).eval(), datamodule


def _load_weights(system: torch.nn.Module, weights: dict, path: Path) -> None:
    """Load by name; where only the layer names differ (runs saved before the builder named stage-2 convs as
    the paper does, conv2_1 -> conv21), by position, each tensor's shape checked."""
    own = system.state_dict()
    if set(weights) == set(own):
        system.load_state_dict(weights)
        return
    shapes_match = len(weights) == len(own) and all(
        a.shape == b.shape for a, b in zip(weights.values(), own.values()))
    if not shapes_match:
        missing = sorted(set(own) - set(weights))[:1] or sorted(set(weights) - set(own))[:1]
        raise DelvingError(f"checkpoint {path} does not fit the model its config builds (first differing "
                           f"parameter: {missing[0]}); valid: a checkpoint written by `delving fit` for this config")
    system.load_state_dict(dict(zip(own, weights.values())))


def _run_config(config: dict | None, ckpt: Path) -> RunConfig:
    """The config the run was trained with: the checkpoint's ``hyper_parameters["config"]``, else config.yaml."""
    if not config:
        return load_config(RunDir.of_checkpoint(ckpt).config_path)
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), config))
    except OmegaConfBaseException as err:
        raise DelvingError(f"the config stored in {ckpt} does not match this version of delving: "
                           f"{str(err).splitlines()[0]}") from None
    validate(cfg)
    return cfg


def _run_dir(ckpt: Path) -> Path:
    return RunDir.of_checkpoint(ckpt).path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DelvingError(f"unknown --device {name!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DelvingError(f"--device {name!r}: no CUDA device here; valid: 'auto' or 'cpu'")
    return device


def parse_scales(protocol: str, values: Sequence[str] | None, crop: int) -> tuple[int, ...]:
    """``--scales`` as shorter sides in pixels; default: the paper's scales in proportion to the crop."""
    if protocol == "center":
        if values:
            raise DelvingError("--scales applies to --protocol 10view and dense; center is the run's own validation "
                               "pipeline")
        return ()
    if not values:
        return tuple(round(crop * s / PAPER_CROP) for s in PAPER_SCALES[protocol])
    scales = []
    for value in values:
        try:
            scale = int(value)
        except ValueError:
            scale = -1
        if scale < crop:
            raise DelvingError(f"bad --scales value {value!r}; valid: integers >= the training crop {crop} "
                               f"(shorter side in pixels)")
        scales.append(scale)
    return tuple(scales)


# ------------------------------------------------------------------------------------------- the views


def softmax_mean(logits: torch.Tensor, images: int) -> torch.Tensor:
    """(images · views, K) logits -> (images, K) softmax scores averaged over each image's views."""
    return logits.softmax(dim=1).view(images, -1, logits.shape[1]).mean(dim=1)


def ten_view_scores(model: torch.nn.Module, images: torch.Tensor, crop: int) -> tuple[torch.Tensor, int]:
    """Softmax averaged over the 10 views of each image (N, C, H, W) -> (N, K), and the view count (10)."""
    views = []
    for b, mirror in ten_crop_boxes(images.shape[-2], images.shape[-1], crop):
        view = images[..., b.top:b.top + b.height, b.left:b.left + b.width]
        views.append(view.flip(-1) if mirror else view)
    batch = torch.stack(views, dim=1).flatten(0, 1)  # (N·10, C, crop, crop), views of one image adjacent
    return softmax_mean(model(batch), len(images)), len(views)


def dense_scores(model: torch.nn.Module, images: torch.Tensor, window: int) -> tuple[torch.Tensor, int]:
    """Sec. 3's dense test of a batch (N, C, H, W) -> (N, K) softmax averaged over every ``window``×``window``
    window of the last conv map of the image and of its mirror, and the number of views (2 × windows)."""
    n = len(images)
    maps = model.forward_features(torch.cat([images, images.flip(-1)]))  # (2N, C', h, w): convs run once
    boxes = dense_windows(maps.shape[-2], maps.shape[-1], window)
    total = maps.new_zeros(2 * n, model.num_classes)
    per_call = max(1, WINDOWS_PER_CALL // (2 * n))
    for start in range(0, len(boxes), per_call):
        chunk = boxes[start:start + per_call]
        windows = torch.stack([maps[..., b.top:b.top + b.height, b.left:b.left + b.width] for b in chunk], dim=1)
        logits = model.forward_head(windows.flatten(0, 1))  # SPP + fc on each window
        total += logits.softmax(dim=1).view(2 * n, len(chunk), -1).sum(dim=1)
    return (total / len(boxes)).view(2, n, -1).mean(dim=0), 2 * len(boxes)


def train_map_size(model: torch.nn.Module, in_chans: int, crop: int, device: torch.device) -> int:
    """The side of the last conv map a training crop produces (model A at 224: 14): the dense window."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise DelvingError(f"--protocol dense needs a model with forward_features/forward_head, not "
                           f"{type(model).__name__}")
    return int(model.forward_features(torch.zeros(1, in_chans, crop, crop, device=device)).shape[-1])


# ------------------------------------------------------------------------------------------- the protocols


class Errors:
    """Top-1 and top-5 error (top-k with k = min(5, classes), as the system's validation)."""

    def __init__(self, num_classes: int, device: torch.device):
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro").to(device)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.top1.update(scores, labels)
        self.top5.update(scores, labels)

    def result(self) -> dict:
        return {"top1_err": 1.0 - float(self.top1.compute()), "top5_err": 1.0 - float(self.top5.compute())}


def center(model, datamodule, device) -> dict:
    """The run's validation loader as it is: one view per image."""
    errors, images = Errors(datamodule.num_classes, device), 0
    datamodule.setup("validate")
    for x, y in datamodule.val_dataloader():
        x, y = datamodule.on_after_batch_transfer((x.to(device), y.to(device)), 0)
        errors.update(model(x), y)
        images += len(y)
    return {**errors.result(), "images": images, "views_per_image": 1}


def multi_scale(model, datamodule, name: str, scales: Sequence[int], views: Callable, batch_size: int,
                device) -> dict:
    """Score every full-resolution val image at each scale with ``views``; average the scales' scores."""
    k = datamodule.num_classes
    combined, per_scale = Errors(k, device), {s: Errors(k, device) for s in scales}
    images = view_count = 0
    for x, y in same_size_batches(full_val_images(name, datamodule), batch_size):
        x, y = x.to(device), y.to(device)
        total = torch.zeros(len(y), k, device=device)
        for scale in scales:
            scores, count = views(model, resize(x, [scale], antialias=True))
            per_scale[scale].update(scores, y)
            total += scores
            view_count += count * len(y)
        combined.update(total / len(scales), y)
        images += len(y)
    return {**combined.result(), "images": images, "views_per_image": view_count / max(images, 1),
            "per_scale": {str(s): e.result() for s, e in per_scale.items()}}


@torch.no_grad()
def evaluate(ckpt: str | Path, protocol: str, scales: Sequence[str] | None = None, *, device: str = "auto",
             out: str | Path | None = None, tracking: str | None = None, batch_size: int = 32) -> dict:
    """Evaluate one checkpoint with one protocol; write the JSON record, log it to W&B, and return it.

    ``tracking`` overrides the run's ``tracking.wandb`` (``disabled`` for ``--no-wandb``).
    """
    if protocol not in PROTOCOLS:  # before loading anything
        raise DelvingError(f"unknown --protocol {protocol!r}; valid: {choices(PROTOCOLS)}")
    if batch_size < 1:
        raise DelvingError(f"--batch-size {batch_size} must be a positive integer")
    torch_device = resolve_device(device)
    ckpt = resolve_checkpoint(ckpt)
    cfg, model, datamodule = load_run(ckpt, torch_device)
    crop = cfg.data.image_size
    sizes = parse_scales(protocol, scales, crop)
    started = time.perf_counter()
    extra = {}
    if protocol == "center":
        result = center(model, datamodule, torch_device)
    elif protocol == "10view":
        result = multi_scale(model, datamodule, cfg.data.name, sizes,
                             lambda m, x: ten_view_scores(m, x, crop), batch_size, torch_device)
    else:
        window = train_map_size(model, datamodule.in_chans, crop, torch_device)
        extra = {"window": window}
        result = multi_scale(model, datamodule, cfg.data.name, sizes,
                             lambda m, x: dense_scores(m, x, window), batch_size, torch_device)
    record = {"protocol": protocol, "scales": list(sizes), "crop": crop, **extra, **result,
              "seconds": round(time.perf_counter() - started, 3), "checkpoint": str(ckpt),
              "model": cfg.model.name, "data": cfg.data.name, "device": str(torch_device)}
    label = "-".join([protocol, *map(str, sizes)])
    path = Path(out) if out else RunDir.of_checkpoint(ckpt).eval_dir / f"{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    record["path"] = str(path)
    mode = wandb_mode(tracking or cfg.tracking.wandb)
    if mode != "disabled":
        _log_wandb(cfg, _run_dir(Path(ckpt)), label, record, mode)
    return record


def _log_wandb(cfg: RunConfig, run_dir: Path, label: str, record: dict, mode: str) -> None:
    """One W&B run per evaluation, in the training run's project and group, with the errors in its summary."""
    import wandb

    run = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, group=cfg.tracking.group,
                     name=f"{run_dir.name}-eval-{label}", job_type="eval", dir=str(run_dir), mode=mode,
                     tags=[*run_tags(cfg), f"protocol={record['protocol']}"],
                     config={"eval": {k: v for k, v in record.items() if k != "per_scale"}, **to_dict(cfg)},
                     reinit="finish_previous")
    run.summary.update({f"eval/{label}/err1": record["top1_err"], f"eval/{label}/err5": record["top5_err"]})
    for scale, errors in record.get("per_scale", {}).items():
        run.summary.update({f"eval/{record['protocol']}-{scale}/err1": errors["top1_err"],
                            f"eval/{record['protocol']}-{scale}/err5": errors["top5_err"]})
    run.finish()


def summary_line(record: dict) -> str:
    scales = f" at {'/'.join(map(str, record['scales']))}" if record["scales"] else ""
    return (f"{record['protocol']}{scales}: top-1 err {record['top1_err']:.4f}, top-5 err {record['top5_err']:.4f} "
            f"({record['images']} images, {record['views_per_image']:g} views each, {record['seconds']:.1f} s) "
            f"-> {record['path']}")
