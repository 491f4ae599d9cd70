"""``tmass-lake info LAKE``: what the manifest says (light: no hats, so it answers at once)."""

from __future__ import annotations

import argparse
import json

from tmass_lake.cli.options import check_urls, storage_options
from tmass_lake.convert.manifest import format_info, read_manifest


def cmd_info(ns: argparse.Namespace) -> int:
    check_urls([ns.lake])
    manifest = read_manifest(ns.lake, storage_options(ns.storage_option))
    print(json.dumps(manifest, indent=1) if ns.json else format_info(manifest))
    return 0
