"""``tmass-lake info LAKE``: what the manifest says (light: no hats, so it answers at once)."""

from __future__ import annotations

import argparse
import json

from tmass_lake.cli.options import check_urls, storage_options
from tmass_lake.convert.manifest import format_info, read_manifest, unfinished
from tmass_lake.errors import NOT_FINISHED


def cmd_info(ns: argparse.Namespace) -> int:
    check_urls([ns.lake])
    so = storage_options(ns.storage_option)
    manifest = read_manifest(ns.lake, so)
    print(json.dumps(manifest, indent=1) if ns.json else format_info(manifest))
    if not ns.json:  # what the manifest lists but a killed (re)build left without its properties
        for name, entry in sorted(manifest["tables"].items()):
            if unfinished(ns.lake, entry, so):
                print(f"{name}: {NOT_FINISHED}")
    return 0
