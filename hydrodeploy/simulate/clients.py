"""How external clients talk to a program: which relation they write, how a request fact is
built from its attributes, and how a reply is matched to its request (docs/LANGUAGE.md, External
clients). Shared by the simulator and the benchmark clients of the network runtime."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.simulate.config import SimulationError

FILLABLE = ("client", "id", "payload", "key", "value")


@dataclass(frozen=True)
class ClientProtocol:
    input: ir.InputDecl
    output_id_columns: dict[str, int]  # output relation -> position of the request id

    @staticmethod
    def of(program: ir.Program) -> ClientProtocol:
        if not program.inputs:
            raise SimulationError(f"{program.path}: the program declares no .input, so clients cannot send requests")
        decl = program.inputs[0]
        unknown = [a for a in decl.attrs if a not in FILLABLE]
        if unknown:
            raise SimulationError(
                f"{program.path}: clients cannot fill attribute '{unknown[0]}' of input '{decl.relation}' "
                f"(they fill {', '.join(FILLABLE)})"
            )
        for needed in ("client", "id"):
            if needed not in decl.attrs:
                raise SimulationError(
                    f"{program.path}: input '{decl.relation}' needs a '{needed}' attribute for clients to use it"
                )
        if not program.outputs:
            raise SimulationError(f"{program.path}: the program declares no .output, so requests can never complete")
        columns: dict[str, int] = {}
        for out in program.outputs:
            if out.attrs is not None and "id" in out.attrs:
                columns[out.relation] = out.attrs.index("id")
            elif out.attrs is not None:
                raise SimulationError(f"{program.path}: output '{out.relation}' declares attributes but no 'id'")
            else:
                columns[out.relation] = 0
        return ClientProtocol(decl, columns)

    def request(self, client: str, request_id: int, rng: random.Random, payload_bytes: int, keys: int) -> tuple[Any, ...]:
        values: list[Any] = []
        for attr in self.input.attrs:
            if attr == "client":
                values.append(client)
            elif attr == "id":
                values.append(request_id)
            elif attr == "payload":
                values.append(format(rng.getrandbits(4 * payload_bytes), f"0{payload_bytes}x"))
            elif attr == "key":
                values.append(rng.randrange(keys))
            else:  # value
                values.append(f"v{rng.getrandbits(32):08x}")
        return tuple(values)

    def request_id(self, relation: str, values: tuple[Any, ...]) -> Any:
        column = self.output_id_columns.get(relation)
        if column is None or column >= len(values):
            return None
        return values[column]
