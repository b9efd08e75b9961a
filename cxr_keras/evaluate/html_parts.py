"""Pieces of the toolkit's HTML pages (report.html of an evaluation and of a run): escaping, tables, figures
inlined as data URIs, and the page shell with its stylesheet inlined, so a page opens from a USB stick on a
machine with no network. Written with the standard library: one static page needs no template engine.
"""

from __future__ import annotations

import base64
import html
import os
from importlib import resources

from cxr_keras.evaluate.report import Table
from cxr_keras.io_utils import atomic_writer

esc = html.escape


def asset(name: str) -> str:
    """A file shipped in cxr_keras/evaluate/page/ (the stylesheet, the explorer's script)."""
    return resources.files("cxr_keras.evaluate").joinpath("page", name).read_text(encoding="utf-8")


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].rstrip("%")
    try:
        float(head)
    except ValueError:
        return False
    return True


def table_html(table: Table, level: int = 2) -> str:
    parts = [f"<h{level}>{esc(table.title)}</h{level}>"] if table.title else []
    parts += [f"<p>{esc(table.intro)}</p>"] if table.intro else []
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    head = f"<thead><tr>{head}</tr></thead>" if any(table.header) else ""
    body = "".join("<tr>" + "".join(f'<td{" class=num" if _numeric(c) else ""}>{esc(c)}</td>' for c in row) + "</tr>"
                   for row in table.rows)
    key = f' id="table-{esc(table.key)}"' if table.key else ""
    parts.append(f"<table{key}>{head}<tbody>{body}</tbody></table>")
    parts += [f"<p>{esc(table.after)}</p>"] if table.after else []
    return "\n".join(parts)


def data_uri(path: str) -> str | None:
    """A PNG or JPEG as a data: URI (the page then needs no other file); None when the file is missing."""
    if not os.path.isfile(path):
        return None
    kind = "jpeg" if path.lower().endswith((".jpg", ".jpeg")) else "png"
    with open(path, "rb") as f:
        return f"data:image/{kind};base64," + base64.b64encode(f.read()).decode("ascii")


def figure(path: str, caption: str, alt: str = "") -> str:
    """An inlined image with its caption; nothing when the file is missing."""
    uri = data_uri(path)
    if uri is None:
        return ""
    return (f'<figure><img src="{uri}" alt="{esc(alt or caption)}" loading="lazy">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def link(href: str, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document: stylesheet (and `script`) inlined, nothing fetched from anywhere."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>\n{asset('page.css')}</style>\n</head>\n<body>\n{body}\n"
            + (f"<script>\n{script}</script>\n" if script else "") + "</body>\n</html>\n")


def write_page(path: str, text: str) -> str:
    with atomic_writer(path, encoding="utf-8") as f:
        f.write(text)
    return path
