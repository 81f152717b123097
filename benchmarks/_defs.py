"""The definition file the Modbus benchmarks poll: `registers` holding registers 0.. as U16,
one variable each (Index r + 1, name `R<r>`), recorded at every poll."""

from __future__ import annotations

from decimal import Decimal

from config.model import (
    Action,
    DataType,
    DefinitionFile,
    ModbusPoint,
    Protocol,
    RegisterKind,
    Variable,
)


def u16_block(registers: int, protocol: Protocol = Protocol.MODBUS_TCP) -> DefinitionFile:
    variables = tuple(
        Variable(line=r + 2, index=r + 1, info1="3", info2=str(r), info3="U16", info4="",
                 name=f"R{r}", tag="", coef_a=Decimal(1), coef_b=Decimal(0), unit="",
                 action=Action.INSTANT, key=f"R{r}",
                 modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=r,
                                    data_type=DataType.U16))
        for r in range(registers))
    return DefinitionFile(file_name="bench.csv", protocol=protocol, category="",
                          manufacturer="", model="", variables=variables, sha256="0" * 64)
