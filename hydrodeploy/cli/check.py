"""`hydrodeploy check FILE.ded...`: parse and statically check programs."""

from __future__ import annotations

import argparse
from typing import Any

from hydrodeploy.language import load_program


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "check", help="parse and statically check .ded programs", description=__doc__
    )
    p.add_argument("files", nargs="+", metavar="FILE.ded")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for path in args.files:
        program = load_program(path)
        rules = sum(len(b.rules) for b in program.blocks)
        print(f"{path}: ok ({len(program.components)} components, {rules} rules)")
    return 0
