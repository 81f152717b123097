"""SunSpec discovery and the definition files generated for what it finds (docs/behaviour.md §3)."""

from ._models import pysunspec2_version
from .definitions import (
                          ChainModel,
                          GeneratedDefinition,
                          Identity,
                          clean_part,
                          definition_file_name,
                          generate,
                          measured_variables,
                          unique_name,
                          write_definition,
)
from .scan import (
    ScanProgress,
    SunSpecDevice,
    SunSpecScan,
    UnitScanned,
    decode_string,
    discover_sunspec,
    estimated_duration_s,
)

__all__ = [
    "ChainModel", "GeneratedDefinition", "Identity", "ScanProgress", "SunSpecDevice", "SunSpecScan",
    "UnitScanned", "clean_part",
    "decode_string", "definition_file_name", "discover_sunspec", "estimated_duration_s",
    "generate", "measured_variables", "pysunspec2_version", "unique_name", "write_definition",
]
