"""MkDocs hook: build without Material's search shim when it has not been fetched (no npm on this machine)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.offline_search")


def on_config(config):
    """Drop a polyfill script that is not in docs/, so no page asks for a file that is not there."""
    polyfills = config.extra.get("polyfills") or []
    present = [p for p in polyfills if (Path(config.docs_dir) / p).is_file()]
    if len(present) < len(polyfills):
        log.info("search works when the site is served; for search from file://, run `make offline-search` "
                 "(needs npm) and build again")
        config.extra["polyfills"] = present
    return config
