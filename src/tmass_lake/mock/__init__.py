"""Deterministic mock of the 2MASS Extended Mission working databases in IRSA's bulk format.

``generate(out, scale=..., seed=...)`` writes every Extended Mission table (IRSA-style gzip'd
``|``-delimited text driven by the schema files), the truth behind it (Parquet), Gaia DR3 and
AllWISE-like reference catalogues (HATS) and a manifest. Per product, merged groups, links and
detections follow IRSA's proportions (the schemas' ``rows``; the manifest's ``proportions``).
``format_table`` turns any typed Arrow table into IRSA bulk text. Modules: ``geometry`` (fields,
regions, tiles, coordinates), ``families`` (each family's scans and chunks, IRSA's proportions),
``truth`` (sources, light curves, noise), ``tables`` (one chunk's rows and groups), ``references``
(Gaia/AllWISE), ``bulkfmt`` (text), ``columns`` (Arrow building), ``generator``.
"""

from tmass_lake.mock.bulkfmt import format_table
from tmass_lake.mock.generator import GENERATOR_VERSION, generate

__all__ = ["GENERATOR_VERSION", "format_table", "generate"]
