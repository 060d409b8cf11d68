"""report.json (schema 1) and its Markdown rendering."""

from dfkd_edge.report.render import render_markdown

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "render_markdown"]
