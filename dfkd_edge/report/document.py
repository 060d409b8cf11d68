"""report.md and report.html from a report's blocks: convert's (dfkd_edge.report.render) or quantize's
(dfkd_edge.report.render_model), by the report's flow."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from dfkd_edge.report.render import Block, student_sections
from dfkd_edge.report.render_model import model_sections


def sections(report: dict) -> list[Block]:
    """The report as blocks, in reading order (rendered to Markdown and HTML alike)."""
    if report.get("flow") == "quantize":
        return model_sections(report)
    return student_sections(report)



def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: dict) -> str:
    out = []
    for blk in sections(report):
        if blk.kind in ("h1", "h2", "h3"):
            out += ["#" * int(blk.kind[1]) + " " + blk.text, ""]
        elif blk.kind == "p":
            out += [blk.text, ""]
        elif blk.kind == "verdict":
            out += [f"> **{blk.text.split('. ', 1)[0]}.** {blk.text.split('. ', 1)[1] if '. ' in blk.text else ''}", ""]
        elif blk.kind == "img":
            out += [f"![{blk.text}]({blk.text})", ""]
        elif blk.kind == "table":
            out.append("| " + " | ".join(blk.header) + " |")
            out.append("|" + "---|" * len(blk.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in blk.rows]
            out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then `code` -> <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #dde;
padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.2em}table{border-collapse:collapse;margin:.5em 0 1em;
font-size:.92em}th,td{border:1px solid #d5d9e2;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f4f8}td:nth-child(n+4){font-variant-numeric:tabular-nums}code{background:#f2f4f8;
padding:0 .25em;border-radius:3px}img{max-width:100%;border:1px solid #e3e6ee}
.verdict{padding:.8em 1em;border-radius:6px;margin:1em 0;border:2px solid}.verdict.ok{background:#eef8f0;
border-color:#3c9a55}.verdict.doubtful{background:#fff6e0;border-color:#d99a00}.verdict.unreliable{background:#fdecec;
border-color:#c62828}"""


def render_html(report: dict, out_dir: Path) -> str:
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(sections(report)[0].text)}</title><style>{_CSS}</style></head><body>"]
    for blk in sections(report):
        if blk.kind in ("h1", "h2", "h3"):
            parts.append(f"<{blk.kind}>{_inline(blk.text)}</{blk.kind}>")
        elif blk.kind == "p":
            parts.append(f"<p>{_inline(blk.text)}</p>")
        elif blk.kind == "verdict":
            head, _, rest = blk.text.partition(". ")
            parts.append(f"<div class='verdict {blk.header[0]}'><strong>{_inline(head)}.</strong> {_inline(rest)}</div>")
        elif blk.kind == "img":
            png = out_dir / blk.text
            if png.exists():
                data = base64.b64encode(png.read_bytes()).decode()
                parts.append(f"<p><img alt='{html.escape(blk.text)}' src='data:image/png;base64,{data}'></p>")
        elif blk.kind == "table":
            parts.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in blk.header)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in blk.rows]
            parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
