"""The ``chromtools`` command line: the Python API's main jobs as subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger("chromtools")


def _demo(args: argparse.Namespace) -> int:
    from chromtools._demo import run_demo

    outputs = run_demo(args.out, fast=args.fast, random_state=args.seed)
    print(f"chromtools demo finished; outputs in {args.out}/")
    for name, path in outputs.items():
        print(f"  {name:<20} {path}")
    return 0


def _train_denoiser(args: argparse.Namespace) -> int:
    from chromtools.models import TrackDenoiser

    n = len(args.noisy)
    if not (n == len(args.clean) == len(args.peaks)):
        msg = f"give --noisy, --clean and --peaks the same number of times (got {n}, {len(args.clean)}, {len(args.peaks)})"
        raise ValueError(msg)
    setup = TrackDenoiser.setup_tracks(
        args.noisy,
        args.clean,
        args.peaks,
        val_chroms=args.val_chroms,
        holdout_chroms=args.holdout_chroms,
        train_chroms=args.train_chroms,
        window=args.window,
    )
    arch_kwargs = {"channels": args.channels} if args.channels is not None else {}
    model = TrackDenoiser(setup, arch=args.arch, **arch_kwargs)
    print(model._model_summary_string)
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        random_state=args.seed,
        accelerator=args.accelerator,
        devices=args.devices,
        progress=not args.quiet,
    )
    model.save(args.out, overwrite=args.overwrite)
    best = f"{model.best_score_:.4f}" if getattr(model, "best_score_", None) is not None else "n/a"
    print(f"saved model to {args.out} (best validation {model.spec_.get('monitor', 'score')}: {best})")
    return 0


def _denoise(args: argparse.Namespace) -> int:
    from chromtools.tl import denoise

    result = denoise(
        args.noisy,
        args.model,
        args.out_prefix,
        extra=args.extra,
        chrom_sizes=args.chrom_sizes,
        chroms=args.chroms,
        batch_size=args.batch_size,
        threshold=args.threshold,
        merge_gap=args.merge_gap,
        min_length=args.min_length,
        blacklist=args.blacklist,
        accelerator=args.accelerator,
        devices=args.devices,
        progress=not args.quiet,
    )
    print(f"wrote {result.track}, {result.peakprob} and {result.peaks} ({len(result.peak_table):,} peaks)")
    print(f"{result.n_bases:,} bp in {result.seconds:.1f} s ({result.bases_per_second / 1e6:.2f} M bp/s)")
    return 0


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chromtools`` command."""
    from chromtools import __version__

    parser = argparse.ArgumentParser(
        prog="chromtools",
        description="Chromatin accessibility tools: track denoising and peak calling, reference mapping, "
        "temporal gene modules.",
    )
    parser.add_argument("--version", action="version", version=f"chromtools {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run every capability end to end on simulated data")
    demo.add_argument("--out", default="chromtools_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--fast", action="store_true", help="smaller data and shorter training")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train-denoiser",
        help="train a track denoiser on (noisy, clean, peaks) triples",
        description="Train a TrackDenoiser on one or more (noisy bigWig, clean bigWig, clean peaks) triples "
        "and save it. Repeat --noisy/--clean/--peaks for several pairs (in the same order).",
    )
    train.add_argument("--noisy", action="append", required=True, metavar="BW", help="low-coverage bigWig (repeatable)")
    train.add_argument(
        "--clean", action="append", required=True, metavar="BW", help="high-coverage bigWig (repeatable)"
    )
    train.add_argument(
        "--peaks", action="append", required=True, metavar="BED", help="clean peaks, BED or narrowPeak (repeatable)"
    )
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to save the model to")
    train.add_argument(
        "--val-chroms",
        nargs="+",
        default=["chr2"],
        metavar="REGION",
        help="chromosomes or regions (chr1:8000000-10000000) that choose the epoch, peak threshold and calibrations "
        "(default: chr2)",
    )
    train.add_argument(
        "--holdout-chroms",
        nargs="*",
        default=[],
        metavar="REGION",
        help="chromosomes or regions left out of training and model choice, for evaluation",
    )
    train.add_argument(
        "--train-chroms",
        nargs="+",
        default=None,
        metavar="REGION",
        help="training chromosomes or regions (default: every base not used for validation or holdout)",
    )
    train.add_argument(
        "--arch", choices=["default", "atacworks"], default="default", help="network (default: %(default)s)"
    )
    train.add_argument(
        "--channels", type=int, default=None, help="feature channels of the network (default: the arch's)"
    )
    train.add_argument("--window", type=int, default=50_000, help="window length in bp (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=20, help="maximum epochs (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=4, help="windows per batch (default: %(default)s)")
    train.add_argument("--lr", type=float, default=3e-3, help="learning rate (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (default: %(default)s)")
    train.add_argument("--devices", type=_devices, default="auto", help="devices to use (default: %(default)s)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    train.set_defaults(func=_train_denoiser)

    den = sub.add_parser(
        "denoise",
        help="denoise a bigWig genome-wide and call peaks",
        description="Denoise a low-coverage bigWig with a trained model; writes PREFIX.track.bw, "
        "PREFIX.peakprob.bw and PREFIX.peaks.narrowPeak.",
    )
    den.add_argument("--model", required=True, metavar="MODEL_DIR", help="folder of a saved TrackDenoiser")
    den.add_argument("--noisy", required=True, metavar="BW", help="low-coverage bigWig")
    den.add_argument("--out-prefix", required=True, metavar="PREFIX", help="prefix of the output files")
    den.add_argument("--extra", nargs="*", default=[], metavar="BW", help="extra input tracks, if the model uses them")
    den.add_argument(
        "--chrom-sizes", default=None, metavar="SIZES", help="chromosome sizes (default: the bigWig header)"
    )
    den.add_argument("--chroms", nargs="*", default=None, metavar="CHR", help="chromosomes to process (default: all)")
    den.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: %(default)s)")
    den.add_argument("--threshold", type=float, default=None, help="peak probability threshold (default: the model's)")
    den.add_argument(
        "--merge-gap", type=int, default=None, help="merge peaks closer than this, bp (default: the model's)"
    )
    den.add_argument("--min-length", type=int, default=None, help="drop shorter peaks, bp (default: the model's, 50)")
    den.add_argument("--blacklist", default=None, metavar="BED", help="drop peaks overlapping these regions")
    den.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (default: %(default)s)")
    den.add_argument("--devices", type=_devices, default="auto", help="device to use (default: %(default)s)")
    den.set_defaults(func=_denoise)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chromtools`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, TypeError, OSError, RuntimeError, ImportError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"chromtools {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
