"""The ``delving`` command: ``fit`` one config, ``sweep`` a W&B sweep file, ``summarize`` a sweep folder,
``info`` on models' sizes, ``write-ffcv`` class folders to a ``.beton``, ``photos`` (the real-photo demo set),
``evaluate`` a checkpoint with the paper's test protocols, ``report`` (a Markdown reproduction report of a run
set beside the paper's numbers), ``dashboard`` (the same views as a W&B report).

Bad input (a config key, a name, a path, a sweep file) prints one line ``delving: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from delving.errors import DelvingError

EPILOG = "Overrides are dotted config keys: --model.depth=30 --init.scheme=xavier (see delving/config.py)."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delving", description="He et al. 2015 (PReLU, He init) experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one run (resumes from its last checkpoint)", epilog=EPILOG)
    fit.add_argument("--config", help="experiment YAML (lists only what differs from the defaults)")
    sweep = sub.add_parser("sweep", help="run a W&B sweep YAML: locally and offline, or on W&B with --wandb")
    sweep.add_argument("file", help="sweep YAML in W&B's format, e.g. sweeps/init_depth.yaml")
    sweep.add_argument("--wandb", action="store_true", help="create the sweep on W&B and run an agent here")
    sweep.add_argument("--out", default="runs", help="local output root (default: runs)")
    sweep.add_argument("--jobs", type=int, default=None, help="parallel worker processes (default: one per CPU)")
    sweep.add_argument("--count", type=int, default=None, help="with --wandb: runs for this agent")
    sweep.add_argument("--list", action="store_true", help="number the grid's cells (for --cell and job arrays)")
    sweep.add_argument("--cell", type=int, default=None, help="run only cell K of --list (skipped if finished)")
    summarize = sub.add_parser("summarize", help="write the table and figure of a finished sweep folder")
    summarize.add_argument("folder", help="e.g. runs/init_depth")
    info = sub.add_parser("info", help="parameters, multiply-adds and depth of models, beside the paper's numbers")
    info.add_argument("models", nargs="*", help="registered model names (default: every delving_* model)")
    info.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    info.add_argument("--activation", default="relu", help="activation name (default relu)")
    info.add_argument("--num-classes", type=int, default=1000)
    _write_ffcv_parser(sub)
    _evaluate_parser(sub)
    _dashboard_parser(sub)
    _report_parser(sub)
    photos = sub.add_parser("photos", help="make the real-photo demo set (ImageNet folder layout, JPEG)")
    photos.add_argument("--out", required=True, help="folder to fill with train/<class>/ and val/<class>/")
    photos.add_argument("--train-per-class", type=int, default=100)
    photos.add_argument("--val-per-class", type=int, default=20)
    photos.add_argument("--size", type=int, default=500, help="longer side of each image (default 500)")
    return parser


def _evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="a checkpoint's top-1/top-5 error with the paper's test protocols",
                              description="center: the run's validation crop; 10view: 4 corners + centre and "
                                          "their mirrors; dense: every window of the conv map (Sec. 3).")
    evaluate.add_argument("--ckpt", required=True, help="a run's checkpoint, e.g. runs/NAME/checkpoints/last.ckpt")
    evaluate.add_argument("--protocol", required=True, help="center | 10view | dense")
    evaluate.add_argument("--scales", nargs="+", default=None,
                          help="shorter sides in pixels, several = multi-scale (default: crop x 256/224 for 10view, "
                               "crop x {256,384,480}/224 for dense)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    evaluate.add_argument("--out", default=None, help="JSON file to write (default RUN/eval/PROTOCOL[-SCALES].json)")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    evaluate.add_argument("--no-wandb", action="store_true", help="do not log the result to W&B")


def _dashboard_parser(sub) -> None:
    dash = sub.add_parser("dashboard", help="a W&B report of a project: ReLU vs PReLU, slopes, init x depth",
                          description="Built with wandb-workspaces. Offline (no `wandb login`) or with --dry-run it "
                                      "builds, validates and writes the layout as JSON; logged in, it publishes.")
    dash.add_argument("--project", required=True, help="W&B project, e.g. delving-init-depth")
    dash.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    dash.add_argument("--depth", type=int, default=30, help="net depth whose PReLU layers get slope panels (default 30)")
    dash.add_argument("--out", default=None, help="layout JSON to write (default runs/dashboard-PROJECT.json)")
    dash.add_argument("--dry-run", action="store_true", help="build and validate only, even when logged in")


def _report_parser(sub) -> None:
    report = sub.add_parser("report", help="a Markdown reproduction report of a run set beside the paper's numbers")
    report.add_argument("folder", help="sweep folder, run folder or wandb:ENTITY/PROJECT, e.g. runs/init_depth")
    report.add_argument("--out", default=None, help="folder for report.md and its PNGs (default FOLDER/report)")


def _write_ffcv_parser(sub) -> None:
    write = sub.add_parser("write-ffcv", help="ImageNet-style class folders to an FFCV .beton",
                           description="Defaults are ffcv-imagenet's: longer side <= 500, half JPEG at quality 90.")
    write.add_argument("--root", required=True, help="dataset folder holding <split>/<class>/*.jpg")
    write.add_argument("--split", required=True, help="sub-folder to convert, e.g. train or val")
    write.add_argument("--out", required=True, help="the .beton to write, e.g. train.beton")
    write.add_argument("--max-resolution", type=int, default=500, help="longer side cap; 0 keeps each file's own")
    write.add_argument("--jpeg-quality", type=int, default=90)
    write.add_argument("--compress-probability", type=float, default=0.5, help="with --write-mode proportion")
    write.add_argument("--write-mode", default="proportion", help="proportion | jpg | raw | smart")
    write.add_argument("--workers", type=int, default=None, help="writer processes (default: the usable CPUs)")
    write.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (and count them)")
    write.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def overrides(extra: list[str]) -> list[str]:
    """``--model.depth=30`` / ``--model.depth 30`` -> ``model.depth=30`` (OmegaConf dotlist)."""
    out, i = [], 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or token == "--":
            raise DelvingError(f"unexpected argument {token!r}; valid: --key=value config overrides")
        if "=" in token:
            out.append(token[2:])
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out.append(f"{token[2:]}={extra[i + 1]}")
            i += 1
        else:
            raise DelvingError(f"override {token!r} has no value; write {token}=VALUE")
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return _dispatch(args, extra)
    except DelvingError as err:
        print(f"delving: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("delving: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _dispatch(args, extra: list[str]) -> int:
    if args.command == "fit":
        from delving.config import load_config

        cfg = load_config(args.config, overrides(extra))
        from delving.train import fit

        result = fit(cfg)
        print(f"{result['name']}: {result['status']}, final val err1 {result['final_val_err1']}")
        return 0
    if extra:
        raise DelvingError(f"unexpected arguments {' '.join(extra)!r} for 'delving {args.command}'")
    if args.command == "info":
        import timm

        from delving.models.complexity import markdown, model_size

        names = args.models or timm.list_models("delving_*")
        print(markdown([model_size(n, args.size, args.activation, args.num_classes) for n in names]))
        return 0
    if args.command == "write-ffcv":
        return _write_ffcv(args)
    if args.command == "photos":
        from delving.data.photos import make_photos

        root = make_photos(args.out, args.train_per_class, args.val_per_class, args.size)
        print(f"photos: {root}/train and {root}/val (one class per photograph)")
        return 0
    if args.command == "evaluate":
        from delving.evaluate import evaluate, summary_line

        print(summary_line(evaluate(args.ckpt, args.protocol, args.scales, device=args.device, out=args.out,
                                    tracking="disabled" if args.no_wandb else None, batch_size=args.batch_size)))
        return 0
    if args.command == "dashboard":
        from delving.dashboard import dashboard

        print(dashboard(args.project, args.entity, args.depth, args.out, args.dry_run))
        return 0
    if args.command == "report":
        from delving.report import figures as report_figures
        from delving.report import write_report

        path = write_report(args.folder, args.out)
        print(f"report: {path} (figures: {', '.join(report_figures(path))})")
        return 0
    if args.command == "summarize":
        from delving.summary import summarize

        print(summarize(args.folder))
        return 0
    return _sweep(args)


def _write_ffcv(args) -> int:
    from delving.data import load_ffcv

    report = load_ffcv().write_beton(Path(args.root) / args.split, args.out, max_resolution=args.max_resolution,
                         jpeg_quality=args.jpeg_quality, compress_probability=args.compress_probability,
                         write_mode=args.write_mode, workers=args.workers, skip_bad=args.skip_bad,
                         overwrite=args.overwrite)
    print(f"write-ffcv: {report.written} images -> {report.out}")
    if report.skipped:
        print(f"write-ffcv: skipped {len(report.skipped)} unreadable file(s), e.g. {report.skipped[0]}")
    return 0


def _sweep(args) -> int:
    from delving.sweep import list_cells, load_sweep, run_cell, run_local, run_wandb, sync_command

    sweep = load_sweep(args.file)
    if args.list:
        for index, name, done in list_cells(sweep, args.out):
            print(f"{index}\t{'done' if done else 'todo'}\t{name}")
        return 0
    if args.cell is not None:
        result = run_cell(sweep, args.cell, args.out)
        print(f"cell {args.cell}: " + ("already finished, skipped" if result is None else
                                       f"{result['name']}: {result['status']}, final val err1 {result['final_val_err1']}"))
        return 0
    if args.wandb:
        run_wandb(sweep, count=args.count)
        return 0
    folder, failed = run_local(sweep, args.out, args.jobs)
    from delving.summary import summarize

    print(summarize(folder))
    print(f"summary: {folder / 'summary.md'}, {folder / 'summary.csv'}, figure {folder / 'init_depth.png'}")
    sync = sync_command(folder)
    if sync:
        print(f"upload the offline W&B runs when online: {sync}")
    if failed:
        print(f"delving: error: {failed} cell(s) failed; run the same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
