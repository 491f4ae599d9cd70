"""The small argument dataclass every build stage takes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tmass_lake.schema import TableSchema
from tmass_lake.storage import join

HISTOGRAM_ORDER = 10
SPILL_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class InputArguments:
    """A table's input files, the output and the knobs every build of text input shares."""

    schema: TableSchema
    inputs: tuple[str, ...]
    output: str
    tmp_dir: str
    input_format: str = "bulk"
    storage_options: dict = field(default_factory=dict)
    block_bytes: int = 16 << 20
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("no input files")
        if len(set(self.inputs)) != len(self.inputs):
            dup = sorted({p for p in self.inputs if self.inputs.count(p) > 1})
            raise ValueError(f"input files listed more than once: {dup}")

    @property
    def table(self) -> str:
        return self.schema.table

    def input_key(self, index: int) -> str:
        """A stable, file-name-safe key for one input (its position and a hash of its URL)."""
        digest = hashlib.sha1(self.inputs[index].encode()).hexdigest()[:10]
        return f"{index:05d}_{digest}"


@dataclass(frozen=True)
class BuildArguments(InputArguments):
    """A positional table into a HATS collection: thresholds, orders, margin, spill sizes."""

    pixel_threshold: int = 1_000_000
    byte_threshold: int = 512 << 20
    highest_order: int = HISTOGRAM_ORDER
    lowest_order: int = 0
    margin_arcsec: float = 10.0
    run_bytes: int = 192 << 20
    compression_level: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.schema.positional:
            raise ValueError(f"{self.schema.table} has no positions: store it with build_parquet_table")
        if not 0 <= self.lowest_order <= self.highest_order <= HISTOGRAM_ORDER:
            raise ValueError(f"orders must satisfy 0 <= lowest <= highest <= {HISTOGRAM_ORDER}")

    @property
    def spill_dir(self) -> str:
        return join(self.tmp_dir, "spill")

    @property
    def plan_dir(self) -> str:
        return join(self.tmp_dir, "plan")
