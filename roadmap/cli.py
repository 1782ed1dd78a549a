"""The command line: list / run / table / plot / bench. Parses, then calls the package.

User mistakes (ConfigError, DataError, ...) end as one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import json
import sys

from .config import ROADMAPS, ConfigError, load_roadmap

USER_ERRORS = (ConfigError,)


def cmd_list(args) -> None:
    from .report import markdown_table
    from .steps import describe

    rows = [describe(step) for step in load_roadmap(args.roadmap)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    header = ["id", "title", "adopted", "base", "params (M)", "GFLOPs", "paper GFLOPs", "paper top-1"]
    print(markdown_table(header, [[r["id"], r["title"], "yes" if r["adopted"] else "branch", r["base"] or "",
                                   r["params"], f"{r['gflops']:.2f}", r["paper_gflops"], r["paper_top1"]] for r in rows]),
          end="")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like every other user error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="runner.py", description="ResNet-50 -> ConvNeXt roadmap, step by step.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("list", help="every step in roadmap order with params and GFLOPs (224 px, 1000 classes)")
    p.add_argument("--roadmap", default="resnet50", help=f"a folder of steps/ ({', '.join(ROADMAPS)}, or your own)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
