"""The ``chromtools`` command line: the Python API's main jobs as subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger("chromtools")


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    outputs = run_demo(args.out, fast=args.fast, random_state=args.seed)
    print(f"chromtools demo finished; outputs in {args.out}/")
    for name, path in outputs.items():
        print(f"  {name:<20} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chromtools`` command."""
    from . import __version__

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
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, TypeError, OSError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"chromtools {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
