"""mkdocs hook (mkdocs.yml ``hooks:``), two fixes of the rendered HTML:

- the docstrings use Sphinx roles (:func:`get`, :class:`~multiloss.LossParts`), which Markdown
  renders as the role's text followed by a code span: show the code span alone (with ``~``,
  only the last component, as Sphinx does);
- GitHub's tables need a pipe inside a code span escaped (`a \\| b`) and drop the backslash;
  Python-Markdown keeps it: drop it in inline code here, so the pages read the same on both.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):<code>(~(?:\w+\.)*)?")
_INLINE_CODE = re.compile(r"<code>([^<]*)</code>")


def on_page_content(html, page, config, files):
    html = _ROLE.sub("<code>", html)
    return _INLINE_CODE.sub(lambda m: "<code>" + m.group(1).replace("\\|", "|") + "</code>",
                            html)
