"""Package data: one TOML pipeline per product family, shipped as ``tmass_lake.pipelines``."""
