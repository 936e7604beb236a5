"""``delving evaluate``: the 10-view boxes and mirrors against hand-computed ones, dense windows on inputs the
model was not trained at, the three protocols on a tiny digits checkpoint (centre = the run's validation error),
W&B offline, the full-resolution readers (folder, FFCV) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision.transforms.v2.functional import five_crop

from conftest import TINY, wandb_logs
from delving.cli import main
from delving.experiment.training.config import load_config
from delving.data.full import BetonImages, full_val_images, same_size_batches
from delving.experiment.evaluation.evaluate import dense_scores, evaluate, parse_scales, ten_view_scores, train_map_size
from delving.experiment.training.train import build_datamodule, fit, run_dir
from delving.experiment.evaluation.views import Box, dense_windows, five_crop_boxes, ten_crop_boxes

# ------------------------------------------------------------------------------------------- geometry


def test_ten_crop_boxes_are_the_hand_computed_corners_and_centre():
    # An ImageNet image at shorter side 256 (256×341), 224 crops: margins 32 and 117; centre round(58.5) = 58.
    assert five_crop_boxes(256, 341, 224) == [
        Box(0, 0, 224, 224), Box(0, 117, 224, 224), Box(32, 0, 224, 224), Box(32, 117, 224, 224),
        Box(16, 58, 224, 224)]
    # Digits at 18 (16·256/224 rounded), 16 crops: margins 2, centre (1, 1).
    assert five_crop_boxes(18, 18, 16)[1:] == [Box(0, 2, 16, 16), Box(2, 0, 16, 16), Box(2, 2, 16, 16),
                                                 Box(1, 1, 16, 16)]
    ten = ten_crop_boxes(7, 10, 4)  # odd margins: 3 and 6, centre (round(1.5), 3) = (2, 3)
    assert [box for box, _ in ten] == [Box(0, 0, 4, 4), Box(0, 6, 4, 4), Box(3, 0, 4, 4), Box(3, 6, 4, 4),
                                       Box(2, 3, 4, 4)] * 2
    assert [mirror for _, mirror in ten] == [False] * 5 + [True] * 5
    with pytest.raises(ValueError, match="does not fit"):
        five_crop_boxes(15, 40, 16)


@pytest.mark.parametrize("size", [(7, 10), (256, 341), (18, 18)])
def test_five_boxes_cut_what_torchvision_five_crop_cuts(size):
    image = torch.randn(2, 3, *size)
    crop = min(size) - 3 if min(size) > 20 else 4
    for ours, theirs in zip(five_crop_boxes(*size, crop), five_crop(image, [crop, crop])):
        assert torch.equal(image[..., ours.top:ours.top + crop, ours.left:ours.left + crop], theirs)


class Recorder(torch.nn.Module):
    """Records its input; returns fixed logits (one class per view index) so the average is checkable."""

    def forward(self, x):
        self.seen = x
        return torch.eye(10).repeat(len(x) // 10, 1) * 5.0


def test_ten_views_are_the_five_crops_and_their_mirrored_pixels():
    image = torch.arange(2 * 7 * 10, dtype=torch.float32).view(2, 1, 7, 10)
    model = Recorder()
    scores, views = ten_view_scores(model, image, 4)
    assert views == 10 and model.seen.shape == (20, 1, 4, 4)
    seen = model.seen.view(2, 10, 1, 4, 4)
    tl, tr, bl, br, centre = (0, 0), (0, 6), (3, 0), (3, 6), (2, 3)
    for index, (top, left) in enumerate([tl, tr, bl, br, centre]):
        patch = image[:, :, top:top + 4, left:left + 4]
        assert torch.equal(seen[:, index], patch)
        for j in range(4):  # the mirror: column j of the view is column 3 - j of the patch
            assert torch.equal(seen[:, index + 5, ..., j], patch[..., 3 - j])
    # Softmax averaged over the 10 views: each view votes for its own class, so the mean is uniform.
    assert torch.allclose(scores, torch.full((2, 10), 0.1))


def test_dense_windows_are_every_window_row_by_row():
    assert dense_windows(5, 6, 4) == [Box(0, 0, 4, 4), Box(0, 1, 4, 4), Box(0, 2, 4, 4),
                                      Box(1, 0, 4, 4), Box(1, 1, 4, 4), Box(1, 2, 4, 4)]
    assert len(dense_windows(24, 32, 14)) == 11 * 19  # model A at shorter side 384 (4:3): 209 windows
    assert dense_windows(4, 4, 4) == [Box(0, 0, 4, 4)]
    assert dense_windows(3, 6, 4) == [Box(0, 0, 3, 4), Box(0, 1, 3, 4), Box(0, 2, 3, 4)]  # clipped rows


def test_dense_window_is_the_training_crops_map():
    with torch.device("meta"):  # model A's 178M parameters: shapes only
        model_a = timm.create_model("delving_model_a")
    assert train_map_size(model_a, 3, 224, torch.device("meta")) == 14  # Sec. 3: 14×14 windows
    plain = timm.create_model("delving_plain", depth=9, widths=(4, 8, 8), fc_width=16, in_chans=1, num_classes=10)
    assert train_map_size(plain, 1, 16, torch.device("cpu")) == 4


@torch.no_grad()
def test_dense_scores_average_every_window_of_both_mirrors_at_an_untrained_size():
    torch.manual_seed(0)
    model = timm.create_model("delving_plain", depth=9, widths=(4, 8, 8), fc_width=16, in_chans=1,
                              num_classes=10).eval()
    # At the training size there is one window: dense = mean of the softmax of the image and of its mirror.
    x = torch.randn(3, 1, 16, 16)
    scores, views = dense_scores(model, x, 4)
    expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    assert views == 2 and torch.allclose(scores, expected, atol=1e-6)
    # 23×29 was never seen in training: conv map 5×7, so 2×4 windows of 4×4 per mirror, 16 views.
    x = torch.randn(2, 1, 23, 29)
    scores, views = dense_scores(model, x, 4)
    maps = model.forward_features(torch.cat([x, x.flip(-1)]))
    assert maps.shape[-2:] == (5, 7) and views == 16
    by_window = [model.forward_head(maps[..., t:t + 4, l:l + 4]).softmax(1) for t in range(2) for l in range(4)]
    expected = torch.stack(by_window).mean(0).view(2, 2, 10).mean(0)
    assert torch.allclose(scores, expected, atol=1e-6) and torch.allclose(scores.sum(1), torch.ones(2))


def test_default_scales_follow_the_paper_in_proportion_to_the_crop():
    assert parse_scales("10view", None, 224) == (256,)
    assert parse_scales("dense", None, 224) == (256, 384, 480)
    assert parse_scales("dense", None, 16) == (18, 27, 34)
    assert parse_scales("dense", ["19", "23"], 16) == (19, 23)
    assert parse_scales("center", None, 16) == ()


def test_same_size_batches_split_where_the_size_changes():
    images = [(torch.zeros(3, 4, 5), 0), (torch.zeros(3, 4, 5), 1), (torch.zeros(3, 5, 4), 2),
              (torch.zeros(3, 5, 4), 3), (torch.zeros(3, 5, 4), 4)]
    batches = list(same_size_batches(images, 2))
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 4, 5), (2, 3, 5, 4), (1, 3, 5, 4)]
    assert [y.tolist() for _, y in batches] == [[0, 1], [2, 3], [4]]


# ------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny delving_plain trained one epoch on digits (4 batches); its validation covers all 360 images."""
    cfg = load_config(None, [*TINY, f"out_dir={tmp_path_factory.mktemp('runs')}", "name=tiny"])
    result = fit(cfg, progress=False)
    return run_dir(cfg) / "checkpoints" / "last.ckpt", result


def _evaluate_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args, "--no-wandb"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_three_protocols_give_three_records_and_center_is_the_validation_error(digits_run, capsys):
    ckpt, result = digits_run
    for protocol in ("center", "10view", "dense"):
        code, out, _ = _evaluate_cli(capsys, "--ckpt", str(ckpt), "--protocol", protocol)
        assert code == 0 and out.count("\n") == 1 and out.startswith(protocol)
    folder = ckpt.parent.parent / "eval"
    records = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert sorted(records) == ["10view-18.json", "center.json", "dense-18-27-34.json"]
    for record in records.values():
        assert 0.0 <= record["top5_err"] <= record["top1_err"] <= 1.0 and record["images"] == 360
    # Same preprocessing as the run's validation => the same errors.
    assert records["center.json"]["top1_err"] == pytest.approx(result["final_val_err1"], abs=1e-6)
    assert records["center.json"]["top5_err"] == pytest.approx(result["final_val_err5"], abs=1e-6)
    assert records["10view-18.json"]["views_per_image"] == 10
    # Conv maps at 18/27/34: 4×4, 6×6, 8×8 -> 1 + 9 + 25 windows of 4×4, each with its mirror.
    dense = records["dense-18-27-34.json"]
    assert dense["window"] == 4 and dense["views_per_image"] == 2 * (1 + 9 + 25)
    assert sorted(dense["per_scale"]) == ["18", "27", "34"]


def test_dense_at_sizes_the_model_never_saw(digits_run, tmp_path):
    ckpt, _ = digits_run
    record = evaluate(ckpt, "dense", ["19", "23"], out=tmp_path / "odd.json", tracking="disabled")
    # 19 -> 9 -> 4: one window; 23 -> 11 -> 5: 2×2 windows; both mirrored.
    assert record["views_per_image"] == 2 * (1 + 4) and json.loads((tmp_path / "odd.json").read_text())["scales"] \
        == [19, 23]
    assert 0.0 <= record["per_scale"]["23"]["top1_err"] <= 1.0


def test_evaluation_logs_an_offline_wandb_run(digits_run, tmp_path):
    ckpt, _ = digits_run
    evaluate(ckpt, "center", out=tmp_path / "c.json", tracking="offline")
    logs = wandb_logs(ckpt.parent.parent)
    assert len(logs) == 1
    data = logs[0].read_bytes()  # W&B's record log: the summary keys and tags are in it
    assert b"eval/center/err1" in data and b"protocol=center" in data


@pytest.mark.parametrize("args, message", [
    (["--protocol", "twelve"], "unknown --protocol 'twelve'; valid: '10view', 'center', 'dense'"),
    (["--protocol", "dense", "--scales", "12"], "bad --scales value '12'; valid: integers >= the training crop 16"),
    (["--protocol", "dense", "--scales", "big"], "bad --scales value 'big'"),
    (["--protocol", "center", "--scales", "18"], "--scales applies to --protocol 10view and dense"),
])
def test_bad_protocol_or_scale_is_a_one_line_error(digits_run, capsys, args, message):
    code, out, err = _evaluate_cli(capsys, "--ckpt", str(digits_run[0]), *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("delving: error: ")
    assert message in err


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    code, _, err = _evaluate_cli(capsys, "--ckpt", str(tmp_path / "nope.ckpt"), "--protocol", "center")
    assert code == 2 and err == f"delving: error: checkpoint not found: {tmp_path / 'nope.ckpt'} (a run's " \
                                "checkpoints/last.ckpt)\n"
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    code, _, err = _evaluate_cli(capsys, "--ckpt", str(tmp_path / "junk.ckpt"), "--protocol", "center")
    assert code == 2 and err.startswith("delving: error: cannot read checkpoint") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------- folder and FFCV


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from delving.data.photos import make_photos

    return make_photos(tmp_path_factory.mktemp("photos"), 2, 2, 64, classes=3, progress=False)


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_beton_images_are_the_stored_full_images(photos, tmp_path, mode):
    from delving.data.ffcv import write_beton

    write_beton(photos / "val", tmp_path / "val.beton", max_resolution=None, write_mode=mode, workers=1,
                progress=False)
    files = sorted((photos / "val").glob("*/*.jpg"))
    images = BetonImages(tmp_path / "val.beton")
    assert len(images) == len(files)
    for index, path in enumerate(files):  # written in the sorted-folder order
        image, label = images[index]
        source = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.shape == source.shape and label == sorted(p.name for p in (photos / "val").iterdir()).index(
            path.parent.name)
        difference = (image.float() - source.float()).abs().mean()
        assert difference == 0 if mode == "raw" else difference < 4  # JPEG at quality 90 re-encodes


@pytest.mark.slow
@pytest.mark.parametrize("data", ["folder", "ffcv"])
def test_protocols_on_photo_data(photos, tmp_path, data):
    """A tiny plain net trained 1 epoch at 32×32 crops on the photos: folder and FFCV data give full-resolution
    images of their own sizes (64 on the longer side), evaluated at scales 37 (10-view) and 37/55 (dense)."""
    root = photos
    if data == "ffcv":
        from delving.data.ffcv import write_beton

        root = tmp_path / "betons"
        root.mkdir()
        for split in ("train", "val"):
            write_beton(photos / split, root / f"{split}.beton", max_resolution=None, write_mode="jpg", workers=1,
                        progress=False)
    cfg = load_config(None, [*TINY, f"data.name={data}", f"data.root={root}", "data.image_size=32",
                             "data.batch_size=2", "data.num_workers=1", "trainer.limit_val_batches=1.0",
                             f"out_dir={tmp_path}", "name=photos"])
    result = fit(cfg, progress=False)
    ckpt = run_dir(cfg) / "checkpoints" / "last.ckpt"
    full = full_val_images(data, build_datamodule(cfg))
    assert len(full) == 6 and max(full[0][0].shape[1:]) == 64 and full[0][0].dtype == torch.float32
    center = evaluate(ckpt, "center", tracking="disabled")
    assert center["top1_err"] == pytest.approx(result["final_val_err1"], abs=1e-6)
    ten = evaluate(ckpt, "10view", tracking="disabled")
    dense = evaluate(ckpt, "dense", ["37", "55"], tracking="disabled")
    assert ten["scales"] == [37] and ten["views_per_image"] == 10 and dense["window"] == 8
    for record in (center, ten, dense):
        assert record["images"] == 6 and 0.0 <= record["top5_err"] <= record["top1_err"] <= 1.0
