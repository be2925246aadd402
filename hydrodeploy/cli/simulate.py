"""`hydrodeploy simulate FILE.ded`: run a whole program in one process on a seeded network."""

from __future__ import annotations

import argparse
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "simulate", help="simulate a program with closed-loop clients", description=__doc__
    )
    p.add_argument("file", metavar="FILE.ded")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("simulate lands with hydrodeploy.simulate")
