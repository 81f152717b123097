"""Modbus TCP and RTU acquisition: codec, request planner, links, drivers and the RTU tunnel."""
