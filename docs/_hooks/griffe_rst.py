"""A griffe extension: the reST in rlalign's docstrings, as the Markdown mkdocstrings renders.

The docstrings are written for ``help()`` and for reading in the source: Google-style sections
with a few reST constructs. This rewrites those constructs while the API reference is built;
the sources are left as they are.

- ``:math:`x``` becomes ``$x$``, and a ``.. math::`` directive a ``$$ ... $$`` block (the site
  renders both with MathJax);
- ``:func:`name``` (and ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``) becomes the
  code span ```name``` (``~pkg.mod.name`` shows ``name``);
- a paragraph ending in ``::`` ends in ``:``; its indented block stays a code block;
- a reST simple table (rows between ``====  ====`` borders) becomes a Markdown table.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc):`~?([^`]+)`")
_BORDER = re.compile(r"^(\s*)=+(\s+=+)+\s*$")


def _role(match: re.Match) -> str:
    target = match.group(1)
    whole = match.group(0)
    shown = target.rsplit(".", 1)[-1] if ":`~" in whole else target
    return f"`{shown}`"


def _math_directives(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, inline = m.groups()
        body = [inline] if inline.strip() else []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i].strip())
            i += 1
        body = [b for b in body if b]
        out += ["", f"{indent}$$", *(f"{indent}{b}" for b in body), f"{indent}$$", ""]
    return out


def _simple_tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _BORDER.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        border, indent = lines[i], m.group(1)
        spans = [(s.start(), s.end()) for s in re.finditer(r"=+", border)]
        rows, i = [], i + 1
        while i < len(lines) and not _BORDER.match(lines[i]):
            if lines[i].strip():
                text = lines[i]
                cells = [text[a:b].strip() for a, b in spans[:-1]]
                cells.append(text[spans[-1][0] :].strip())
                rows.append(cells)
            i += 1
        i += 1  # the closing border
        out += [
            "",
            indent + "| " + " | ".join(" " for _ in spans) + " |",
            indent + "|" + "---|" * len(spans),
            *(
                indent + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                for row in rows
            ),
            "",
        ]
    return out


def rest_to_markdown(text: str) -> str:
    """The Markdown form of one docstring (see the module docstring)."""
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    text = _ROLE.sub(_role, text)
    lines = _simple_tables(_math_directives(text.splitlines()))
    lines = [re.sub(r"(\S)::$", r"\1:", line.rstrip()) for line in lines]
    return "\n".join(line for line in lines if line.strip() != "::")


class RestToMarkdown(Extension):
    """Rewrite every docstring once, when its object is loaded."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(obj.docstring.value)
