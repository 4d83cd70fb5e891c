"""mkdocs hooks of the site (``hooks:`` in mkdocs.yml).

The package's docstrings cross-reference with Sphinx roles (``:class:`TrialEngine```), which
mkdocstrings renders as their text; the role's name, left in front of the code span, is removed.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj):(?=<code)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub("", html)
