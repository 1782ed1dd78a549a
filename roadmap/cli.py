"""The command line: list / run / sweep / table / plot / study / bench / export / predict / evaluate. Parses, then calls the package.

User mistakes (errors.UserError: ConfigError, DataError, ResultsError) end as one line on stderr and exit code 2; Ctrl-C ends
with 130, imports included: this module imports only the standard library at the top, the package
(and torch, which takes seconds) inside `main`."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Step


def cmd_list(args) -> None:
    from .config import load_roadmap
    from .markdown import markdown_table
    from .readme import marked_text, replace_between_markers, steps_markers
    from .steps import describe

    markers = steps_markers(args.roadmap)
    if args.readme:
        marked_text(Path(args.readme), *markers)   # a README that cannot take the table fails before any work
    rows = [describe(step) for step in load_roadmap(args.roadmap)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    header = ["id", "title", "adopted", "base", "params (M)", "GFLOPs", "paper GFLOPs", "paper top-1"]
    table = markdown_table(header, [[r["id"], r["title"], "yes" if r["adopted"] else "branch", r["base"] or "",
                                     f"{r['params']:.2f}", f"{r['gflops']:.2f}", r["paper_gflops"], r["paper_top1"]]
                                    for r in rows])
    print(table, end="")
    if args.readme:
        block = (f"`python runner.py list --roadmap {args.roadmap} --readme` (this file) wrote this table: params and "
                 "GFLOPs (MACs of convs and linear layers) at 224 px and 1000 classes.\n\n" + table)
        replace_between_markers(Path(args.readme), *markers, block)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like every other user error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def path_arg(text: str) -> str:
    """A folder or file option: an empty one ('') would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing; give a folder or file")
    return text


def cmd_run(args) -> int:
    from .config import ConfigError, parse_overrides
    from .plan import seed_list
    from .results import FAILED, default_checkpoints, default_weights
    from .runs import run_command

    overrides = parse_overrides(args.set)
    if args.compile:
        overrides.setdefault("train", {})["compile"] = True
    if args.device:
        overrides.setdefault("train", {})["device"] = args.device
    seeds = seed_list(args.seeds, args.seed)
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run")
    checkpoints = Path(args.checkpoints or default_checkpoints(args.results))
    weights = Path(args.weights or default_weights(args.results))
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more, not {args.jobs}")
    counts = run_command(args.roadmap, None if args.all else args.step, args.scale, args.data, seeds, overrides,
                         Path(args.results), checkpoints, weights, progress=not args.no_progress,
                         dry_run=("json" if args.json else "yaml") if args.dry_run else None,
                         jobs=args.jobs, argv=args.argv, worker=args.worker)
    return 1 if counts.get(FAILED) else 0  # diverged runs are results; crashed ones are not


def cmd_sweep(args) -> int:
    from .config import ConfigError
    from .results import FAILED
    from .sweep import dry_run, load_sweep, train_sweep

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more, not {args.jobs}")
    sweep = load_sweep(args.name)
    if args.dry_run:
        print(dry_run(sweep, Path(args.results), args.cell, args.jobs), end="")
        return 0
    counts = train_sweep(sweep, Path(args.results), args.cell, args.jobs, args.argv, not args.no_progress,
                         worker=args.worker)
    return 1 if counts.get(FAILED) else 0


def cmd_sweep_report(args) -> None:
    from .sweepreport import make_sweep_report

    readmes = [Path(readme) for readme in args.readme]
    for path in make_sweep_report(args.name, Path(args.results), Path(args.out), readmes, not args.no_plot):
        print(path)


def cmd_table(args) -> None:
    from .report import make_table

    readme = Path(args.readme) if args.readme else None
    for path in make_table(args.roadmap, args.scale, args.data, Path(args.results), Path(args.out), readme,
                           figure=not args.no_figure):
        print(path)


def cmd_plot(args) -> None:
    from .report import make_plot

    for path in make_plot(args.roadmap, args.scale, args.data, Path(args.results), Path(args.out)):
        print(path)


def cmd_study(args) -> None:
    from .study import make_study

    readmes = [Path(readme) for readme in args.readme]
    for path in make_study(args.roadmap, args.sets, Path(args.results), Path(args.out), readmes, not args.no_plot):
        print(path)


def cmd_check_rerun(args) -> None:
    from .rerun import check_rerun

    print(check_rerun(args.roadmap, args.set, Path(args.fresh), Path(args.results)), end="")


def kept_run(args, data: str | None) -> tuple[dict, Step, Path]:
    """(record, step, weights folder) of the complete run that --step/--roadmap/--scale/--seed name."""
    from .config import load_step
    from .results import default_weights
    from .weights import find_record

    step = load_step(args.roadmap, args.step)
    record = find_record(Path(args.results), args.roadmap, step, args.scale, data, args.seed)
    return record, step, Path(args.weights or default_weights(args.results))


def cmd_export(args) -> None:
    from .config import load_step
    from .weights import check_format, check_not_named, check_target, export, export_files

    check_format(args.format, load_step(args.roadmap, args.step))   # a format the step cannot express: no record needed
    check_target(args.format, Path(args.to))
    record, step, weights = kept_run(args, args.data)
    for path in export_files(args.format, Path(args.to)):   # a Hugging Face folder's card too
        check_not_named(path, Path(args.results), weights, "--to")
    print(export(record, step, weights, Path(args.to), args.format))


def cmd_predict(args) -> None:
    from .predict import predict, prediction_line
    from .runtime import Dist, pick_device
    from .weights import load_kept

    record, _, weights = kept_run(args, args.data)
    predictions = predict(load_kept(record, weights), record, args.images, pick_device(args.device, Dist()))
    print(json.dumps(predictions, indent=1) if args.json else "\n".join(map(prediction_line, predictions)))


def cmd_evaluate(args) -> None:
    from .perclass import per_class_text, plot_confusion, write_csv
    from .predict import evaluate
    from .runtime import Dist, pick_device
    from .weights import check_not_named, load_kept

    record, _, weights = kept_run(args, args.trained_on)
    for path, option in ((args.csv, "--csv"), (args.plot, "--plot")):
        if path:
            check_not_named(Path(path), Path(args.results), weights, option)
    root = args.root or (record["config"]["data"].get("root") if args.data == record["data"] else None)
    result = evaluate(load_kept(record, weights), record, args.data, root, pick_device(args.device, Dist()),
                      eval_subset=args.eval_subset)
    title = (f"{result['step']} seed {result['seed']} on {result['data']}: top-1 {result['top1']:.2f}%, "
             f"top-5 {result['top5']:.2f}% ({result['images']} images)")
    report = per_class_text(result["confusion"], result["classes"]).rstrip()
    print(json.dumps(result, indent=1) if args.json else f"{title}\n\n{report}")
    written = [write_csv(Path(args.csv), result["confusion"], result["classes"])] if args.csv else []
    if args.plot:
        written.append(plot_confusion(Path(args.plot), result["confusion"], result["classes"], title))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


# bench defaults: the GPU setting, or one a CPU finishes in minutes.
BENCH_DEFAULTS = {"cuda": dict(batch=256, image_size=224, repeat=5, warmup=10, iters=20, dtype="bf16"),
                  "cpu": dict(batch=8, image_size=64, repeat=3, warmup=2, iters=3, dtype="fp32")}


def cmd_bench(args) -> None:
    import torch

    from .bench import bench_command
    from .config import load_scale

    on_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.scale:  # the scale's own networks at its image size and per-device batch
        scale = load_scale(args.scale)
        args.batch = scale.micro_batch if args.batch is None else args.batch   # 0 is refused as 0, not taken as unset
        args.image_size = scale.image_size if args.image_size is None else args.image_size
    for key, value in BENCH_DEFAULTS["cuda" if on_cuda else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    path = bench_command(args.roadmap, args.steps, args.batch, args.image_size, args.dtype, args.channels_last,
                         args.compile, args.repeat, args.warmup, args.iters, Path(args.out), args.device,
                         reference=not args.no_reference, scale_name=args.scale, flush_denormal=args.flush_denormal)
    print(f"wrote {path}")


def cmd_plan(args) -> None:
    from .compute import plan_costs, render
    from .config import parse_overrides
    from .plan import plan_runs, seed_list

    plans = plan_runs(args.roadmap, args.step, args.scale, args.data, seed_list(args.seeds, args.seed),
                      parse_overrides(args.set))
    dtype = args.dtype or ("fp32" if args.device.lower() == "cpu" else "bf16")
    costs = plan_costs(plans, args.device, args.devices, dtype, args.utilization, jobs=args.jobs)
    print(json.dumps(costs, indent=1) if args.json else render(costs), end="\n" if args.json else "")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--scale", default="demo", help="the scale whose results to report")
    p.add_argument("--data", help="the dataset whose results to report (default: the only one present)")
    p.add_argument("--results", default="results", type=path_arg, help="results folder (default results/)")
    p.add_argument("--out", default="report", type=path_arg, help="output folder (default report/)")


def add_run_choice(p: argparse.ArgumentParser, data_flag: str = "--data") -> None:
    """The options that name one complete run and where its record and weights are."""
    p.add_argument("--step", required=True, metavar="ID", help="the step whose run to use")
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--scale", default="demo", help="the scale it was trained at (default demo)")
    p.add_argument(data_flag, dest=data_flag.lstrip("-").replace("-", "_"),
                   help="the dataset it was trained on (default: the only one with a record of that step)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="its seed (default 0)")
    p.add_argument("--results", default="results", type=path_arg, help="results folder (default results/)")
    p.add_argument("--weights", type=path_arg, help="weights folder (default: weights/ inside the results folder)")


def build_parser() -> argparse.ArgumentParser:
    from .compute import DEFAULT_UTILIZATION
    from .config import ROADMAPS, STEPS_DIR, available_scales
    from .weights import FORMATS

    parser = OneLineParser(prog="runner.py", description="ResNet-50 -> ConvNeXt roadmap, step by step.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("list", help="every step in roadmap order with params and GFLOPs (224 px, 1000 classes)")
    p.add_argument("--roadmap", default="resnet50", help=f"a folder of steps/ ({', '.join(ROADMAPS)}, or your own)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--readme", type=path_arg, metavar="PATH",
                   help="also refresh the steps table between this file's markers (docs/steps.md)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="train one step, several, or the whole roadmap",
                       description="Train steps in roadmap order; complete runs are skipped, interrupted ones resume.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--step", nargs="+", metavar="ID", help="step ids ('runner.py list' shows them)")
    which.add_argument("--all", action="store_true", help="every step of the roadmap, side branches included")
    p.add_argument("--roadmap", default="resnet50", help=f"a folder of steps/ ({', '.join(ROADMAPS)}, or your own)")
    p.add_argument("--scale", default="demo", help=f"a preset of steps/scales/ ({', '.join(available_scales(STEPS_DIR))}, "
                                                          "or your own; default demo)")
    p.add_argument("--data", help="fashion-mnist | cifar10 | cifar100 | imagefolder:PATH | synthetic "
                                  "(default: the scale's)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=1, metavar="N", help="train seeds 0..N-1 (default 1)")
    seeds.add_argument("--seed", type=int, nargs="+", metavar="K", help="train these seeds, e.g. --seed 3 4")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. model.kernel_size=5, scale.epochs=10, data.root=DIR")
    p.add_argument("--results", default="results", type=path_arg, help="results folder (default results/)")
    p.add_argument("--checkpoints", type=path_arg,
                   help="checkpoint folder (default: checkpoints/ inside the results folder)")
    p.add_argument("--weights", type=path_arg, help="folder for complete runs' final weights (default: weights/ "
                                                    "inside the results folder)")
    p.add_argument("--device", help="auto (default: cuda when visible) | cpu | cuda; sets train.device")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at a time in N processes on the CPU, sharing its threads (default 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # workers.py: a process of --jobs
    p.add_argument("--dry-run", action="store_true",
                   help="print every planned run fully resolved (recipe with its final lr, batching, updates); "
                        "train and write nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON list")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="train a sweep's cells: steps/sweeps/NAME.yaml (factors and their levels)",
                       description="Trains every cell of a sweep file (steps/sweeps/NAME.yaml: a base scale and data, "
                                   "steps, seeds, factors with their levels as a grid or a list of cells) into "
                                   "RESULTS/sweeps/NAME/CELL/; a cell equal to the base scale uses RESULTS itself. "
                                   "Complete runs are skipped, interrupted ones resume.")
    p.add_argument("name", metavar="NAME", help="a sweep file of steps/sweeps/, without .yaml")
    p.add_argument("--cell", type=int, nargs="+", metavar="K",
                   help="only these cells, by the index --dry-run shows (a Slurm array task: $SLURM_ARRAY_TASK_ID); "
                        "a cell marked untrained trains when named")
    p.add_argument("--results", default="results", type=path_arg, help="results folder (default results/)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="N runs at a time on the CPU, as run --jobs")
    p.add_argument("--dry-run", action="store_true",
                   help="list every cell, its runs, what is done and plan's wall-time estimate; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # workers.py: a process of --jobs
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweep-report", help="a sweep's table, CSV and figure: each cell's endpoints and their gap",
                       description="Per cell, each step's top-1 and the gap between the roadmap's endpoints (ConvNeXt-T "
                                   "minus the modern-recipe ResNet, paired over seeds); per factor, how the gap moves "
                                   "between its levels with the others fixed (Welch's t); lines that say which "
                                   "factors move it beyond noise; a figure. From the records alone.")
    p.add_argument("name", metavar="NAME", help="a sweep file of steps/sweeps/, without .yaml")
    p.add_argument("--results", default="results", type=path_arg, help="results folder (default results/)")
    p.add_argument("--out", default="report", type=path_arg, help="output folder (default report/)")
    p.add_argument("--no-plot", action="store_true", help="the table alone")
    p.add_argument("--readme", action="append", default=[], type=path_arg, metavar="PATH",
                   help="also refresh this file's sweep blocks (sweep-NAME: the whole report; sweep-NAME-answer: the "
                        "figure and what it found); more than once for several files")
    p.set_defaults(func=cmd_sweep_report)

    p = sub.add_parser("plan", help="what a roadmap costs: training FLOPs, images, time and device-hours per run",
                       description="Estimates every run of a roadmap at a scale on a device, from a committed "
                                   "bench record of that device (results/bench/) or its datasheet peak.")
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--step", nargs="+", metavar="ID", help="step ids (default: every step)")
    p.add_argument("--scale", default="demo", help="a preset of steps/scales/")
    p.add_argument("--data", help="dataset spec (default: the scale's)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds 0..N-1 (default 1)")
    seeds.add_argument("--seed", type=int, nargs="+", metavar="K", help="these seeds")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as for run")
    p.add_argument("--device", default="cpu", help="cpu, or a GPU name such as H100 or A100 (default cpu)")
    p.add_argument("--devices", type=int, default=1, help="how many of them (default 1)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="on a CPU: N runs at a time, as run --jobs N trains them (default 1)")
    p.add_argument("--dtype", help="bf16 | fp16 | fp32 (default: bf16 on GPUs, fp32 on a CPU)")
    p.add_argument("--utilization", type=float, default=DEFAULT_UTILIZATION,
                   help=f"share of the datasheet peak assumed when no bench record exists (default {DEFAULT_UTILIZATION})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("table", help="markdown + csv table of results, one row per step (--readme PATH: that file too)")
    add_report_arguments(p)
    p.add_argument("--readme", type=path_arg, metavar="PATH",
                   help="also refresh the results block between this file's markers (docs/results.md, docs/reverse.md); "
                        "without it no such file is touched")
    p.add_argument("--no-figure", action="store_true",
                   help="with --readme: leave the figure out of the block (by default it links the one 'plot' wrote "
                        "to --out)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="figure of the step-by-step gains (png + svg)")
    add_report_arguments(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("study", help="result sets side by side: each step's delta in each, and where they differ",
                       description="Each SET is SCALE/DATA[@RESULTS] (e.g. cpu/fashion-mnist, "
                                   "cpu/imagefolder-cifar10-jpg, cpu64/fashion-mnist@other_results). Per step: its "
                                   "delta in every set with the 95% CI, the difference between sets that differ in "
                                   "one thing (Welch's t), the paper's delta; notes on what reproduces and what "
                                   "depends on resolution or dataset; a figure.")
    p.add_argument("sets", nargs="+", metavar="SET", help="SCALE/DATA[@RESULTS], two or more")
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--results", default="results", type=path_arg, help="results folder of sets without @ (default results/)")
    p.add_argument("--out", default="report", type=path_arg, help="output folder (default report/)")
    p.add_argument("--no-plot", action="store_true", help="the table alone")
    p.add_argument("--readme", action="append", default=[], type=path_arg, metavar="PATH",
                   help="also refresh the study blocks between this file's markers (the whole study: docs/results.md; "
                        "its answer alone: README.md); may be given more than once")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("check-rerun", help="do runs trained again land within the committed seeds' spread?",
                       description="Every complete run of SET under --fresh (a fresh seed, a clean clone's, another "
                                   "machine's) against the 95%% prediction interval of one more seed from the runs of "
                                   "SET under --results, leaving out the fresh run's own seed. Prints a table; writes "
                                   "nothing.")
    p.add_argument("set", metavar="SET", help="SCALE/DATA, e.g. cpu64/fashion-mnist")
    p.add_argument("--fresh", required=True, type=path_arg, help="the results folder of the runs trained again")
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--results", default="results", type=path_arg, help="the committed results (default results/)")
    p.set_defaults(func=cmd_check_rerun)

    p = sub.add_parser("bench", help="training images/s, memory and MFU per step, beside timm's models",
                       description="Times full training steps (forward, backward, AdamW) on a synthetic batch; "
                                   "timm resnet50 and convnext_tiny run in the same process under the same settings.")
    p.add_argument("--roadmap", default="resnet50", help="a folder of steps/")
    p.add_argument("--steps", nargs="+", metavar="ID", help="step ids (default: every step)")
    p.add_argument("--batch", type=int, help="images per step (default 256 on CUDA, 8 on a CPU)")
    p.add_argument("--image-size", type=int, help="pixels (default 224 on CUDA, 64 on a CPU)")
    p.add_argument("--dtype", help="bf16 | fp16 | fp32 (default bf16 on CUDA, fp32 on a CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: as runs train, train.channels_last: on)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=None,
                   help="on a CPU, denormal floats as zero (default: as runs train, train.flush_denormal: off)")
    p.add_argument("--repeat", type=int, help="timed windows; the median is reported (default 5; CPU 3)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10; CPU 2)")
    p.add_argument("--iters", type=int, help="training steps per timed window (default 20; CPU 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-reference", action="store_true", help="skip timm's reference models")
    p.add_argument("--scale", help="build the steps at this scale (its widths, depths, stem, image size and "
                                   "micro-batch), as `runner.py plan` times that scale's runs")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "roadmap-bench"), type=path_arg,
                   help="folder for the JSON evidence (default: outside the tree; commit evidence with --out results/bench)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="write a run's kept weights for roadmap, timm, torchvision or Hugging Face",
                       description="native: a .safetensors file with the run's config and class names in its "
                                   "metadata, rebuilt by roadmap.weights.load_native; timm / torchvision: a "
                                   "state_dict under their key names (safetensors when PATH ends in .safetensors, "
                                   "else torch.save), for a step whose file says it equals their model (timm: "
                                   "ConvNeXt at any width, stem stride 1, 3 or 4; torchvision: ResNet at full "
                                   "width, stem stride 4); "
                                   "huggingface: a folder that transformers' ConvNextForImageClassification and "
                                   "AutoImageProcessor load, for a ConvNeXt at any width.")
    add_run_choice(p)
    p.add_argument("--to", required=True, metavar="PATH", help="the file to write (huggingface: the folder)")
    p.add_argument("--format", choices=FORMATS, default="native")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-5 classes of image files by a run's kept weights")
    add_run_choice(p)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--json", action="store_true", help="one JSON list instead of a line per image")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="top-1/top-5 and a per-class report (accuracy, precision, confusion matrix) "
                                        "of a run's kept weights on a dataset with the same classes")
    add_run_choice(p, "--trained-on")
    p.add_argument("--data", required=True, metavar="SPEC", help="the dataset to evaluate on (its eval split)")
    p.add_argument("--root", help="data.root for that dataset (default: the run's, for its own dataset)")
    p.add_argument("--eval-subset", type=int, metavar="N", help="only this many evaluation images")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--csv", type=path_arg, metavar="PATH",
                   help="also write the per-class report as CSV: a row per class, its confusion-matrix row beside it")
    p.add_argument("--plot", type=path_arg, metavar="PATH", help="also write the confusion matrix as a PNG heat map")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_evaluate)
    return parser


def stop_on_sigterm() -> None:
    """Slurm preemption and `kill` send SIGTERM: unwind like Ctrl-C, so run locks are released."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):   # a file name that is not UTF-8 is printed as its own bytes, as `ls` does
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        return run_cli(argv)
    except KeyboardInterrupt:   # at any point: while torch imports, while parsing, while training
        print("interrupted", file=sys.stderr)
        return 130


def run_cli(argv: list[str] | None) -> int:
    from .errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # run --jobs starts its workers with these
    if args.command in ("run", "sweep"):
        stop_on_sigterm()
    try:
        return args.func(args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
