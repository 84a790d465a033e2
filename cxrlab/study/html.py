"""A report as one self-contained HTML file: inline CSS, figures embedded as base64 PNG, no
script and nothing fetched from anywhere (it opens offline, attached to an e-mail, on a cluster).

A report is a list of *blocks*, the same list :mod:`cxrlab.study.report` renders as Markdown:
``("h", level, text)``, ``("p", text)``, ``("ul", [text, ...])``, ``("table", DataFrame,
caption)``, ``("img", path, alt)``, ``("code", text)``. Text may hold the inline Markdown the
reports use: ``**bold**``, ``_italic_`` and ``` `code` ```.
"""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72em;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-style: italic; padding: .3em 0; }
code, pre { background: #f4f4f4; border-radius: 3px; padding: 0 .2em; }
pre { padding: .6em; overflow-x: auto; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.synthetic { color: #a00; font-weight: bold; }
"""


def inline(text: str) -> str:
    """Escape ``text`` and turn the reports' inline Markdown into HTML."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w])_([^_]+)_(?![\w])", r"<em>\1</em>", out)
    return out.replace("SYNTHETIC", '<span class="synthetic">SYNTHETIC</span>')


def _cell(v, floatfmt: str) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, floatfmt)
    return inline(v)


def table_html(df: pd.DataFrame, caption: str = "", floatfmt: str = ".3f") -> str:
    head = "".join(f"<th>{inline(c)}</th>" for c in df.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{_cell(v, floatfmt)}</td>" for v in row) + "</tr>"
                     for row in df.itertuples(index=False))
    cap = f"<caption>{inline(caption)}</caption>" if caption else ""
    return f"<table>{cap}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def image_html(path: Path, alt: str) -> str:
    """The PNG at ``path`` as a data URI (a missing file says so in the page)."""
    path = Path(path)
    if not path.is_file():
        return f"<p><em>figure {html.escape(path.name)} is missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{inline(alt)}</figcaption></figure>")


def render_html(blocks: list, title: str) -> str:
    """The whole page."""
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append(f"<h{b[1]}>{inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            parts.append(f"<p>{inline(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            parts.append(table_html(b[1], b[2] if len(b) > 2 else "",
                                    b[3] if len(b) > 3 else ".3f"))
        elif kind == "img":
            parts.append(image_html(b[1], b[2]))
        elif kind == "code":
            parts.append(f"<pre><code>{html.escape(str(b[1]))}</code></pre>")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
