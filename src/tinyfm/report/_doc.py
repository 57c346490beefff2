"""A tiny document model rendered twice: to markdown and to one self-contained HTML file.

The report is built once as a list of blocks, so report.md and report.html always say the same thing. Inline
text may use `**bold**`, `*italic*` and `` `code` ``; nothing else of markdown is needed.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    muted: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]


@dataclass
class Image:
    alt: str
    path: str  # relative to the run directory


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Details:
    summary: str
    blocks: list[Block] = field(default_factory=list)


Block = Heading | Para | Bullets | Table | Image | Code | Details


# ---------------------------------------------------------------------------------------------------- markdown


def to_markdown(blocks: list[Block]) -> str:
    """Render blocks as GitHub-flavoured markdown (one blank line between blocks)."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


def _md_block(block: Block) -> str:
    match block:
        case Heading(text, level):
            return f"{'#' * level} {text}"
        case Para(text, muted):
            return f"*{text}*" if muted else text
        case Bullets(items):
            return "\n".join(f"- {item}" for item in items)
        case Table():
            return _md_table(block)
        case Image(alt, path):
            return f"![{alt}]({path})"
        case Code(text, lang):
            return f"```{lang}\n{text}\n```"
        case Details(summary, inner):
            return f"<details>\n<summary>{summary}</summary>\n\n{to_markdown(inner)}\n</details>"
    raise TypeError(f"unknown block {block!r}")


def _md_table(table: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = ["---:" if num else "---" for num in table.numeric]
    return "\n".join([line(table.headers), "|" + "|".join(rule) + "|", *(line(r) for r in table.rows)])


# ---------------------------------------------------------------------------------------------------- html

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --alt: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); max-width: 1040px; margin: 2rem auto 4rem; padding: 0 1.25rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; padding-bottom: .25rem; border-bottom: 1px solid var(--border); }
p.muted, .muted { color: var(--muted); font-size: .92rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .88rem; font-variant-numeric: tabular-nums;
        display: block; overflow-x: auto; max-width: 100%; }
th, td { padding: .4rem .65rem; border-bottom: 1px solid var(--border); white-space: nowrap; }
th { background: var(--alt); text-align: left; font-weight: 600; border-bottom: 2px solid var(--border); }
.num { text-align: right; }
tbody tr:hover { background: #eef5ff; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--border); border-radius: 8px; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .3rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em;
       background: var(--alt); padding: .1rem .3rem; border-radius: 4px; }
pre { background: var(--alt); padding: .9rem 1rem; border-radius: 8px; overflow-x: auto; font-size: .85rem; }
pre code { background: none; padding: 0; }
details { margin: 1rem 0; }
summary { cursor: pointer; color: var(--accent); font-weight: 500; }
ul { padding-left: 1.3rem; }
"""


def to_html(blocks: list[Block], title: str, base_dir: Path) -> str:
    """Render blocks as one HTML page with inline CSS and images embedded as base64 data URIs.

    Args:
        blocks: the document.
        title: the page title.
        base_dir: the directory that Image paths are relative to.

    Returns:
        The HTML text; the file needs nothing beside it.
    """
    body = "\n".join(_html_block(b, base_dir) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block, base_dir: Path) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{_inline(text)}</h{level}>"
        case Para(text, muted):
            return f'<p class="muted">{_inline(text)}</p>' if muted else f"<p>{_inline(text)}</p>"
        case Bullets(items):
            return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in items) + "\n</ul>"
        case Table():
            return _html_table(block)
        case Image(alt, path):
            return _html_image(alt, base_dir / path)
        case Code(text, lang):
            return f'<pre><code class="language-{lang}">{html.escape(text)}</code></pre>'
        case Details(summary, inner):
            body = "\n".join(_html_block(b, base_dir) for b in inner)
            return f"<details>\n<summary>{_inline(summary)}</summary>\n{body}\n</details>"
    raise TypeError(f"unknown block {block!r}")


def _html_table(table: Table) -> str:
    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f'<{tag} class="num">{_inline(v)}</{tag}>' if num else f"<{tag}>{_inline(v)}</{tag}>"
            for v, num in zip(values, table.numeric, strict=True)
        )

    rows = "\n".join(f"<tr>{cells('td', r)}</tr>" for r in table.rows)
    return f"<table>\n<thead><tr>{cells('th', table.headers)}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _html_image(alt: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt_text = html.escape(alt)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt_text}">'
        f"<figcaption>{alt_text}</figcaption></figure>"
    )


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escape text for HTML, then turn the three inline markdown forms we use into tags."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITALIC.sub(r"<em>\1</em>", out)
