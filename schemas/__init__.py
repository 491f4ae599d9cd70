"""Package data: one YAML schema per IRSA table, shipped as ``tmass_lake.schemas``."""
