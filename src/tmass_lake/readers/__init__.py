"""Readers: IRSA bulk files and IPAC tables into typed Arrow blocks plus a quarantine."""

from tmass_lake.readers.bulk import ParsedBlock, read_bulk
from tmass_lake.readers.errors import BadLine, InputError, quarantine_table
from tmass_lake.readers.ipac import read_ipac

__all__ = ["BadLine", "InputError", "ParsedBlock", "quarantine_table", "read_bulk", "read_ipac"]
