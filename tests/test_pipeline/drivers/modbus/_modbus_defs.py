"""Building definition files for the Modbus tests without the config parser."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from config.model import (
    Action,
    ByteOrder,
    DataType,
    DefinitionFile,
    ModbusPoint,
    Protocol,
    RegisterKind,
    Variable,
)


def var(index: int, kind: int, address: int, data_type: DataType | None = DataType.U16, *,
        order: ByteOrder = ByteOrder.BIG_ENDIAN, byte: int | None = None, bit: int | None = None,
        nbits: int | None = None, string_bytes: int | None = None, sf: int | None = None,
        info4: str = "", name: str | None = None, action: Action = Action.INSTANT,
        coef_a: str = "1", coef_b: str = "0", unit: str = "") -> Variable:
    point = ModbusPoint(kind=RegisterKind(kind), address=address, data_type=data_type,
                        byte_order=order, byte=byte, bit=bit, nbits=nbits,
                        string_bytes=string_bytes)
    info3 = "" if data_type is None else f"{data_type}{order}"
    return Variable(line=index + 1, index=index, info1=str(kind), info2=str(address),
                    info3=info3, info4=info4, name=name or f"v{index}", tag="",
                    coef_a=Decimal(coef_a), coef_b=Decimal(coef_b), unit=unit, action=action,
                    coef_a_text=coef_a, coef_b_text=coef_b, modbus=point,
                    scale_factor_index=sf, key=name or f"v{index}")


def definition(*variables: Variable, name: str = "test.csv") -> DefinitionFile:
    digest = hashlib.sha256(repr(variables).encode()).hexdigest()
    return DefinitionFile(file_name=name, protocol=Protocol.MODBUS_TCP, category="Inverter",
                          manufacturer="Test", model="T1", variables=tuple(variables),
                          sha256=digest)
