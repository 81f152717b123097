"""The I/O editor (docs/behaviour.md §10.2, Device form): the gateway's own inputs and relay as
their `io` definition file has them (docs/formats.md §8), one row per channel: its type and
channel as wired, and what may change: contact or input mode, Name, Tag, Coef A/B, unit, action.

A save rewrites the definition file whole and goes through `ConfigEditor` like every other
form: the whole site checked by `config`, errors beside their fields (`v<Index>_<Column>`),
nothing written unless all of it is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from config import ConfigError, parse_definition
from config.errors import Problem
from config.model import DefinitionFile, IoKind, Variable
from pipeline.web.editing import Edit

#: The columns of a row the editor lets change (docs/formats.md §8), in the file's order.
EDITABLE: Final = ("Info3", "Name", "Tag", "CoefA", "CoefB", "Unit", "Action")
ACTIONS: Final = ("0", "1", "2", "4", "8", "9")
#: `Info3`'s meaning per kind (the relay has none).
MODES: Final = {IoKind.ANALOG: (("1", "4-20 mA"), ("2", "0-10 V")),
                IoKind.DIGITAL: (("1", "ON/OFF contact"), ("2", "S0 pulses"))}
KIND_NAMES: Final = {IoKind.ANALOG: "analog input", IoKind.DIGITAL: "digital input",
                     IoKind.RELAY: "relay"}


def field_name(index: int, column: str) -> str:
    return f"v{index}_{column}"


def _texts(var: Variable) -> dict[str, str]:
    return {"Info3": var.info3, "Name": var.name, "Tag": var.tag, "CoefA": var.coef_a_text,
            "CoefB": var.coef_b_text, "Unit": var.unit, "Action": str(int(var.action))}


def io_definition(data: bytes, file_name: str) -> DefinitionFile:
    """The `io` definition file as on disk; `ValueError` when it is not one."""
    try:
        definition = parse_definition(data, file_name).value
    except ConfigError as err:
        raise ValueError(f"{file_name} is rejected ({err}); fix the file first") from None
    if definition.protocol.value != "io":
        raise ValueError(f"{file_name} is not an io definition file")
    return definition


def rows(definition: DefinitionFile) -> list[dict[str, object]]:
    """One row per channel: what is wired (index, kind, channel) and the editable texts."""
    out: list[dict[str, object]] = []
    for var in definition.variables:
        kind = var.io.kind if var.io is not None else IoKind.RELAY
        out.append({"index": var.index, "kind": KIND_NAMES[kind], "channel": var.info2,
                    "modes": [{"value": v, "label": label} for v, label in MODES.get(kind, ())],
                    "values": _texts(var)})
    return out


def with_submitted(table: list[dict[str, object]], form: Mapping[str, str]) -> None:
    """Show the rows as typed, so a refused save loses nothing."""
    for row in table:
        values = row["values"]
        assert isinstance(values, dict)
        for column in EDITABLE:
            typed = form.get(field_name(int(str(row["index"])), column))
            if typed is not None:
                values[column] = typed


def io_edit(path: str, current: bytes, definition: DefinitionFile,
            form: Mapping[str, str]) -> tuple[Edit, dict[str, list[str]]]:
    """The definition file with the submitted texts (a field left out keeps its text), and the
    field errors found before `config` sees it (a `;` or a line break would split the row)."""
    header = current.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    lines = [header]
    rows_by_line: dict[int, int] = {}
    refused: dict[str, list[str]] = {}
    for var in definition.variables:
        texts = _texts(var)
        for column in EDITABLE:
            name = field_name(var.index, column)
            typed = form.get(name, texts[column]).strip()
            if any(c in typed for c in ";\r\n"):
                refused[name] = ["may not contain ';' or a line break (file separators)"]
            texts[column] = typed
        if var.io is not None and var.io.kind is IoKind.RELAY:
            texts["Info3"] = ""
        lines.append(";".join((str(var.index), var.info1, var.info2, texts["Info3"], var.info4,
                               texts["Name"], texts["Tag"], texts["CoefA"], texts["CoefB"],
                               texts["Unit"], texts["Action"])))
        rows_by_line[len(lines)] = var.index
    file_name = path.rpartition("/")[2]

    def locate(problem: Problem) -> str | None:
        # A problem of a column the editor does not write shows above the form.
        if problem.file != file_name or problem.line not in rows_by_line or \
                problem.field not in EDITABLE:
            return None
        return field_name(rows_by_line[problem.line], problem.field)

    data = "".join(line + "\n" for line in lines).encode()
    return Edit(files={path: data}, locate=locate), refused
