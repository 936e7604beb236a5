"""The ``delving`` command: ``fit`` one config, ``sweep`` a W&B sweep file, ``summarize`` a sweep folder,
``info`` on models' sizes, ``write-ffcv`` class folders to a ``.beton``, ``photos`` (the real-photo demo set),
``evaluate`` a checkpoint with the paper's test protocols, ``report`` (a Markdown reproduction report of a run
set beside the paper's numbers), ``dashboard`` (the same views as a W&B report).

Bad input (a config key, a name, a number out of range, a path, a sweep file) prints one line
``delving: error: ...`` and exits 2. Nothing heavy is imported at the top: ``delving --help`` answers without
loading torch.
"""

from __future__ import annotations

import argparse
import ast
import io
import math
import os
import sys
import textwrap
import tokenize
from pathlib import Path

from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir

EPILOG = ("Overrides are dotted config keys: --model.depth=30 --init.scheme=xavier "
          "(see delving/experiment/training/config.py).")
WRITE_MODES = ("proportion", "jpg", "raw", "smart")  # delving.data.ffcv.WRITE_MODES (FFCV's RGBImageField)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error (argparse's own prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"delving: error: {message} (see `{self.prog} --help`)\n")


def _number(kind, low=None, high=None):
    """An argparse type: ``kind`` (int or float), finite, in [low, high] (either bound may be None)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            valid = f">= {low}" if high is None else f"[{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{text} is out of range; valid: {valid}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("delving")
    except PackageNotFoundError:
        from delving import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="delving", description="He et al. 2015 (PReLU, He init) experiments.")
    parser.add_argument("--version", action="version", version=f"delving {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one run (resumes from its last checkpoint)",
                         description="Train one run: the defaults, then --config's YAML, then --KEY=VALUE overrides.",
                         epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("--config", help="experiment YAML (lists only what differs from the defaults)")
    fit.add_argument("--print-config", action="store_true",
                     help="print the resolved config as YAML and stop (nothing is trained or written)")
    sweep = sub.add_parser("sweep", help="run a W&B sweep YAML: locally and offline, or on W&B with --wandb")
    sweep.add_argument("file", help="sweep YAML in W&B's format, e.g. sweeps/init_depth.yaml")
    sweep.add_argument("--wandb", action="store_true", help="create the sweep on W&B and run an agent here")
    sweep.add_argument("--out", default="runs", help="local output root (default: runs)")
    sweep.add_argument("--jobs", type=_number(int, 1), default=None,
                       help="parallel worker processes, >= 1 (default: one per CPU)")
    sweep.add_argument("--count", type=_number(int, 1), default=None,
                       help="runs to train, >= 1: with --wandb, this agent's; locally, at most this many now (a "
                            "random/bayes file without run_cap needs it)")
    sweep.add_argument("--seed", type=_number(int, 0), default=None,
                       help="random/bayes locally: the search's seed, >= 0 (default: the folder's search's, else a "
                            "hash of the sweep's name)")
    sweep.add_argument("--list", action="store_true", help="number the grid's cells (for --cell and job arrays)")
    sweep.add_argument("--cell", type=_number(int, 0), default=None,
                       help="run only cell K of --list (skipped if finished)")
    summarize = sub.add_parser("summarize", help="write the table and figure of a finished sweep folder")
    summarize.add_argument("folder", help="e.g. runs/init_depth")
    info = sub.add_parser("info", help="parameters, multiply-adds and depth of models, beside the paper's numbers")
    info.add_argument("models", nargs="*", help="registered model names (default: every delving_* model)")
    info.add_argument("--size", type=_number(int, 1, MAX_INFO_SIZE), default=224,
                      help=f"input height = width, in [1, {MAX_INFO_SIZE}] (default 224)")
    info.add_argument("--activation", default="relu", help="activation name (default relu)")
    info.add_argument("--num-classes", type=_number(int, 1), default=1000)
    _write_ffcv_parser(sub)
    _evaluate_parser(sub)
    _dashboard_parser(sub)
    _report_parser(sub)
    photos = sub.add_parser("photos", help="make the real-photo demo set (ImageNet folder layout, JPEG)")
    photos.add_argument("--out", required=True, help="folder to fill with train/<class>/ and val/<class>/")
    photos.add_argument("--train-per-class", type=_number(int, 1), default=100)
    photos.add_argument("--val-per-class", type=_number(int, 1), default=20)
    photos.add_argument("--size", type=_number(int, 8, MAX_PHOTO_SIZE), default=500,
                        help=f"longer side of each image, in [8, {MAX_PHOTO_SIZE}] (default 500)")
    return parser


MAX_INFO_SIZE = 16384  # counted on the meta device (no memory), but larger sides overflow the FLOP counter's ints
MAX_PHOTO_SIZE = 4096  # as data.image_size's bound


def _evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="a checkpoint's top-1/top-5 error with the paper's test protocols",
                              description="center: the run's validation crop; 10view: 4 corners + centre and "
                                          "their mirrors; dense: every window of the conv map (Sec. 3).")
    evaluate.add_argument("--ckpt", required=True,
                          help=f"a run's checkpoint, e.g. runs/NAME/{RunDir.CHECKPOINTS}/{RunDir.LAST}")
    # checked by evaluate() before anything is loaded (its own line names the valid protocols)
    evaluate.add_argument("--protocol", required=True, help="center | 10view | dense")
    evaluate.add_argument("--scales", nargs="+", default=None,
                          help="shorter sides in pixels, several = multi-scale (default: crop x 256/224 for 10view, "
                               "crop x {256,384,480}/224 for dense); bounded by the memory one resized batch needs")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    evaluate.add_argument("--out", default=None,
                          help=f"JSON file to write (default RUN/{RunDir.EVAL}/PROTOCOL[-SCALES].json)")
    evaluate.add_argument("--batch-size", type=_number(int, 1), default=32,
                          help="images per forward pass (default 32)")
    evaluate.add_argument("--no-wandb", action="store_true", help="do not log the result to W&B")


def _dashboard_parser(sub) -> None:
    dash = sub.add_parser("dashboard", help="a W&B report of a project: ReLU vs PReLU, slopes, init x depth",
                          description="Built with wandb-workspaces. Offline (no `wandb login`) or with --dry-run it "
                                      "builds, validates and writes the layout as JSON; logged in, it publishes.")
    dash.add_argument("--project", required=True, help="W&B project, e.g. delving-init-depth")
    dash.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    dash.add_argument("--depth", type=_number(int, 1), default=30,
                      help="net depth whose PReLU layers get slope panels (default 30)")
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
    write.add_argument("--max-resolution", type=_number(int, 0), default=500,
                       help="longer side cap, >= 1; 0 keeps each file's own (every side keeps >= 1 pixel)")
    write.add_argument("--jpeg-quality", type=_number(int, 1, 100), default=90, help="1 to 100 (default 90)")
    write.add_argument("--compress-probability", type=_number(float, 0, 1), default=0.5,
                       help="with --write-mode proportion: the share of images stored as JPEG, 0 to 1 (default 0.5)")
    write.add_argument("--write-mode", default="proportion", choices=WRITE_MODES, help="proportion | jpg | raw | smart")
    write.add_argument("--workers", type=_number(int, 1), default=None,
                       help="writer processes, >= 1 (default: the usable CPUs)")
    write.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (and count them)")
    write.add_argument("--overwrite", action="store_true", help="replace an existing output file")


# --------------------------------------------------------------------------------- fit --help from the schema


def _config_help() -> str:
    """Every config key with its type, default and the comment beside its field in
    delving/experiment/training/config.py.

    Read from the source (``ast`` + ``tokenize``), not imported: the schema module imports torch, and the help
    must answer in well under a second."""
    from importlib.util import find_spec

    source = Path(find_spec("delving.experiment.training.config").origin).read_text()
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    fields = list(_fields(classes, "RunConfig", ""))
    comments = _field_comments(source, [line for *_, line in fields])
    lines = ["config keys (override any with --KEY=VALUE; lists as --init.fc_std=[0.01,0.01,0.001]):"]
    for key, annotation, default, line in fields:
        lines.append(f"  {key}: {annotation} = {default}")
        text = comments.get(line)
        if text:
            lines += textwrap.wrap(text, 116, initial_indent="      ", subsequent_indent="      ")
    return "\n".join([*lines, "", EPILOG])


def _fields(classes: dict, name: str, prefix: str):
    """(dotted key, type, default, source line) of each field of dataclass ``name``, nested ones flattened."""
    for node in classes[name].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        key, annotation = prefix + node.target.id, ast.unparse(node.annotation)
        factory = _default_factory(node.value)
        if factory in classes:
            yield from _fields(classes, factory, key + ".")
        else:
            default = {"dict": "{}", "list": "[]"}.get(factory, None) if factory else ast.unparse(node.value)
            yield key, annotation, default, node.lineno


def _default_factory(value) -> str | None:
    """``field(default_factory=X)`` -> "X"."""
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        for keyword in value.keywords:
            if keyword.arg == "default_factory":
                return ast.unparse(keyword.value)
    return None


def _field_comments(source: str, rows: list[int]) -> dict[int, str]:
    """source line of a field -> its comment: the comment lines just above it, its trailing comment, and the
    indented comment lines that continue it (``#        | silu | tanh``)."""
    lines = source.splitlines()
    comment = {t.start[0]: t.string[1:] for t in tokenize.generate_tokens(io.StringIO(source).readline)
               if t.type == tokenize.COMMENT}

    def alone(row: int) -> bool:  # a line holding only a comment
        return row in comment and lines[row - 1].lstrip().startswith("#")

    def continuing(row: int) -> bool:
        return alone(row) and comment[row].startswith("     ")

    found = {}
    for row in rows:
        above, r = [], row - 1
        while alone(r) and not continuing(r):
            above.insert(0, comment[r].strip())
            r -= 1
        parts, r = [*above, comment.get(row, "").strip()], row + 1
        while continuing(r):
            parts.append(comment[r].strip())
            r += 1
        found[row] = " ".join(p for p in parts if p)
    return found


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
    except KeyboardInterrupt as err:  # fit and sweep say what they saved
        if str(err):
            print(f"delving: interrupted: {err}", file=sys.stderr)
        elif args.command == "write-ffcv":  # the partial file was removed: nothing to resume
            print("delving: interrupted; no .beton written (run the same command again to start over)",
                  file=sys.stderr)
        else:
            print("delving: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _check_files(args) -> None:
    """A folder where a file is expected is named as such (the commands' own checks would say "not found")."""
    for flag, value in (("--config", getattr(args, "config", None)), ("--ckpt", getattr(args, "ckpt", None)),
                        ("sweep file", getattr(args, "file", None))):
        if value and Path(value).is_dir():
            raise DelvingError(f"{flag} {value} is a directory; give a file")
    out = getattr(args, "out", None)
    if args.command == "evaluate" and out and Path(out).is_dir():
        raise DelvingError(f"--out {out} is a directory; give the JSON file to write")


def _rounded(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fit(args, extra: list[str]) -> int:
    from delving.experiment.training.config import load_config, to_dict

    cfg = load_config(args.config, overrides(extra))
    if args.print_config:
        import yaml

        from delving.experiment.training.train import check_model

        check_model(cfg)  # the build fit starts with: --print-config refuses what fit refuses, in the same line
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from delving.experiment.sweeps.agent import agent_layout
    from delving.experiment.training.train import fit, run_dir

    cfg = agent_layout(cfg)  # under `wandb agent`: the folder, name and group `delving sweep` gives the grid point
    result = fit(cfg)
    print(f"{result['name']}: {result['status']}, final val err1 {_rounded(result['final_val_err1'])}, best "
          f"{_rounded(result['best_val_err1'])}, {result['epochs']} epochs -> {run_dir(cfg)}")
    return 0


def _dispatch(args, extra: list[str]) -> int:
    _check_files(args)
    if args.command == "fit":
        return _fit(args, extra)
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
        check_scales_memory(args.scales, args.batch_size, args.protocol)  # before torch's seconds of import
        from delving.experiment.evaluation.evaluate import evaluate, summary_line

        print(summary_line(evaluate(args.ckpt, args.protocol, args.scales, device=args.device, out=args.out,
                                    tracking="disabled" if args.no_wandb else None, batch_size=args.batch_size)))
        return 0
    if args.command == "dashboard":
        from delving.studies.dashboard import dashboard

        print(dashboard(args.project, args.entity, args.depth, args.out, args.dry_run))
        return 0
    if args.command == "report":
        from delving.studies.report import figures as report_figures
        from delving.studies.report import write_report

        path = write_report(args.folder, args.out)
        print(f"report: {path} (figures: {', '.join(report_figures(path))})")
        return 0
    if args.command == "summarize":
        from delving.studies.summary import summarize

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
    from delving.experiment.sweeps.grid import load_sweep
    from delving.experiment.sweeps.local import list_cells, run_cell, run_local
    from delving.experiment.sweeps.online import run_wandb, sync_command

    sweep = load_sweep(args.file)
    if args.seed is not None and (args.wandb or not sweep.is_search):
        raise DelvingError(f"--seed {args.seed} seeds a local random/bayes search; valid: without --seed here "
                           f"(method {sweep.method}{', on W&B' if args.wandb else ''})")
    if args.list:
        for index, name, done in list_cells(sweep, args.out):
            print(f"{index}\t{'done' if done else 'todo'}\t{name}")
        return 0
    if args.cell is not None:
        result = run_cell(sweep, args.cell, args.out)
        print(f"cell {args.cell}: " + ("already finished, skipped" if result is None else
                                       f"{result['name']}: {result['status']}, final val err1 "
                                       f"{_rounded(result['final_val_err1'])}"))
        return 0
    if args.wandb:
        run_wandb(sweep, count=args.count)
        return 0
    if sweep.is_search:
        from delving.experiment.sweeps.local_search import run_search

        folder, failed = run_search(sweep, args.out, args.jobs, args.count, args.seed)
    else:
        folder, failed = run_local(sweep, args.out, args.jobs, args.count)
    from delving.studies.summary import summarize

    print(summarize(folder, train_baselines=True))  # the table's shallow CNN baseline: one short run, trained once
    print(f"summary: {folder / 'summary.md'}, {folder / 'summary.csv'}, figure {folder / 'init_depth.png'}")
    sync = sync_command(folder)
    if sync:
        print(f"upload the offline W&B runs when online: {sync}")
    if failed:
        print(f"delving: error: {failed} cell(s) failed; run the same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


# A float32 copy of every image of a batch at the largest scale (4:3 images, shorter side = the scale), and for
# the dense protocol its mirror too: a lower bound of what one step of `evaluate` holds in memory.
BYTES_PER_PIXEL = 3 * 4


def check_scales_memory(scales, batch_size: int, protocol: str) -> None:
    """Refuse ``--scales`` whose resized batch alone exceeds this machine's memory (``--scales 100000`` asked for
    terabytes), naming the largest scale that fits at this ``--batch-size``."""
    sizes = [int(s) for s in scales or () if str(s).isdigit()]  # other values: evaluate's own one-line error
    if not sizes:
        return
    copies = 2 if protocol == "dense" else 1
    per_pixel = batch_size * BYTES_PER_PIXEL * copies * 4 / 3
    need, limit = per_pixel * max(sizes) ** 2, _memory_bytes()
    if need > limit:
        largest = int(math.sqrt(limit / per_pixel))
        raise DelvingError(f"--scales {max(sizes)} needs at least {need / 2**30:,.0f} GiB for one batch of "
                           f"{batch_size} images resized to it, more than this machine's {limit / 2**30:,.0f} GiB "
                           f"of memory; valid: scales up to {largest} at --batch-size {batch_size}")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound rather than a wrong one
        return 2**62


if __name__ == "__main__":
    sys.exit(main())
