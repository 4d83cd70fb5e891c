"""Markdown to one self-contained HTML page: how ``report.md`` becomes ``report.html``.

MLflow's artifact viewer shows an HTML artifact in an iframe, where relative image links (and so
the plots of ``report.md``) do not resolve; this page carries its images as ``data:`` URIs. It
covers the Markdown :func:`analysis.report.markdown` writes, no more: headings, paragraphs, pipe
tables, ``>`` notes, ``-`` lists, images, links, code and bold.
"""

from __future__ import annotations

import base64
import html
import itertools
import mimetypes
import re
from pathlib import Path

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; max-width: 75rem; margin: 0 auto; padding: 1rem 1.5rem; }
h1 { font-size: 1.6rem; } h3 { font-size: 1.1rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; padding-bottom: .2rem; border-bottom: 1px solid #d0d7de; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
       padding: 0 .25em; border-radius: 3px; }
blockquote { margin: 1rem 0; padding: .4rem 1rem; border-left: 4px solid #d4a72c; background: #fff8e5; }
blockquote p { margin: .3rem 0; }
.table { overflow-x: auto; margin: 1rem 0; border: 1px solid #d0d7de; border-radius: 4px; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top;
         max-width: 28rem; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
"""
HEADING = re.compile(r"(#{1,6}) (.*)")
TABLE_RULE = re.compile(r"\|(\s*:?-{3,}:?\s*\|)+")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
#: A cell that reads as a number (or ``-``, none): its column is right-aligned.
NUMBER = re.compile(r"[-+]?\.?\d|-(\s|$)")
INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<label>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<strong>.+?)\*\*"
)


def to_html(text: str, folder: Path) -> str:
    """The report's Markdown as one self-contained page, its images inlined as ``data:`` URIs:
    MLflow's artifact viewer shows an HTML artifact in an iframe, where relative image links (and
    so the plots of ``report.md``) do not resolve. Covers the Markdown :func:`markdown` writes:
    headings, paragraphs, pipe tables, ``>`` notes, ``-`` lists, images, links, code and bold."""
    lines = text.splitlines()
    title = next((line[2:] for line in lines if line.startswith("# ")), "report")
    blocks = []
    for block_type, block_lines in itertools.groupby(lines, _block_type):
        block = list(block_lines)
        if block_type == "heading":
            for hashes, words in (line.split(" ", 1) for line in block):
                blocks.append(f"<h{len(hashes)}>{_inline(words, folder)}</h{len(hashes)}>")
        elif block_type == "table":
            blocks.append(_html_table(block, folder))
        elif block_type == "quote":
            quoted = "\n".join(line.removeprefix(">").strip() for line in block)
            blocks.append(f"<blockquote><p>{_inline(quoted, folder)}</p></blockquote>")
        elif block_type == "list":
            items = "".join(f"<li>{_inline(line[2:], folder)}</li>\n" for line in block)
            blocks.append(f"<ul>\n{items}</ul>")
        elif block_type == "paragraph":
            paragraph = "\n".join(block)
            blocks.append(f"<p>{_inline(paragraph, folder)}</p>")
    head = '<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    head += f"<title>{html.escape(title.replace('`', ''))}</title>\n<style>{STYLE}</style>\n"
    body = "\n".join(blocks)
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}</head>\n<body>\n{body}\n</body>\n</html>\n'


def _block_type(line: str) -> str:
    if not line.strip():
        return "blank"
    if HEADING.fullmatch(line):
        return "heading"
    if line.startswith("|"):
        return "table"
    if line.startswith(">"):
        return "quote"
    return "list" if line.startswith("- ") else "paragraph"


def _html_table(lines: list[str], folder: Path) -> str:
    """A pipe table (its first row the header, its second the rule under it) in a box of its own
    that scrolls sideways when the table is wider than the page; columns of numbers right-aligned."""
    cells = [[c.strip().replace("\\|", "|") for c in CELL_SPLIT.split(line.strip()[1:-1])] for line in lines]
    header, body = cells[0], cells[2:] if len(lines) > 1 and TABLE_RULE.fullmatch(lines[1].strip()) else cells[1:]
    aligns = [' class="num"' if body and all(NUMBER.match(r[i]) for r in body) else "" for i in range(len(header))]
    lines_html = [_html_row(header, "th", aligns, folder), "</thead>", "<tbody>"]
    lines_html += [_html_row(cells, "td", aligns, folder) for cells in body]
    return '<div class="table"><table>\n<thead>' + "\n".join(lines_html) + "\n</tbody>\n</table></div>"


def _html_row(cells: list[str], tag: str, aligns: list[str], folder: Path) -> str:
    out = (f"<{tag}{a}>{_inline(c, folder)}</{tag}>" for c, a in zip(cells, aligns, strict=True))
    return f"<tr>{''.join(out)}</tr>"


def _inline(text: str, folder: Path) -> str:
    """One block's text: HTML-escaped, with its code spans, images, links and bold as HTML."""
    out, end = [], 0
    for m in INLINE.finditer(text):
        out.append(html.escape(text[end : m.start()]))
        end = m.end()
        if m["code"] is not None:
            out.append(f"<code>{html.escape(m['code'])}</code>")
        elif m["src"] is not None:
            out.append(f'<img src="{html.escape(_image_src(m["src"], folder))}" alt="{html.escape(m["alt"])}">')
        elif m["href"] is not None:
            out.append(f'<a href="{html.escape(m["href"])}">{_inline(m["label"], folder)}</a>')
        else:
            out.append(f"<strong>{_inline(m['strong'], folder)}</strong>")
    out.append(html.escape(text[end:]))
    return "".join(out)


def _image_src(src: str, folder: Path) -> str:
    """The image as a ``data:`` URI, so the page needs no other file; its link as written when the
    file is not in the report folder."""
    path = folder / src
    if not path.is_file():
        return src
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
