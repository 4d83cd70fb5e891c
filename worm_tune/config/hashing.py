"""A config's name: a short hash of what the trial computes, stable as fields are added.

Runtime fields (where a trial runs) never enter it. The keys of :data:`worm_tune.legacy.ALWAYS_HASHED`
always do; any other field enters only when it differs from its default, so a field added with a
default leaves the name of every config written before it as it was (open_lth names runs this way).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from worm_tune.legacy import ALWAYS_HASHED


def config_hash(config: Mapping[str, Any], defaults: Mapping[str, Any], runtime: Collection[str]) -> str:
    """The 12 hex digits naming ``config`` (every dotted key and its value), given every key's default
    and the runtime keys."""
    hashed = {k: v for k, v in config.items() if k not in runtime and (k in ALWAYS_HASHED or v != defaults[k])}
    blob = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
