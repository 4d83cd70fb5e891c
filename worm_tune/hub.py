"""Offline-first loading from the Hugging Face Hub, shared by the text data and the BERT model.

A checkpoint is read from a folder, else from the local cache without touching the network,
else (only when downloading is allowed) from the Hub. A miss is one line that says where the
files go, instead of minutes of network retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from worm_tune.usage import one_line


def from_hub(cls: Any, checkpoint: str, online: bool, error: type[RuntimeError], **kwargs: Any) -> Any:
    """``cls.from_pretrained(checkpoint)`` from a folder, else from the Hugging Face cache without touching the
    network, else (``online``) from the Hub. A failure becomes a one-line ``error`` saying where the files go."""
    from huggingface_hub import constants

    folder = Path(checkpoint).is_dir()
    try:
        try:
            with hub_offline(True):
                return cls.from_pretrained(checkpoint, local_files_only=True, **kwargs)
        except (OSError, ValueError, RuntimeError):
            if folder or not online:
                raise
        return cls.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:  # not-found and connection errors are OSErrors
        reason = one_line(exc)[:200]
        if folder:
            raise error(
                f"{checkpoint!r} cannot be loaded ({reason}); the folder needs what save_pretrained writes"
            ) from exc
        where = (
            "name a folder holding its files as the checkpoint (--set model.checkpoint=DIR), "
            f"or put them in the Hugging Face cache {constants.HF_HUB_CACHE}"
        )
        if online:
            raise error(
                f"could not fetch {checkpoint!r} from the Hugging Face Hub ({reason}); "
                f"downloading needs internet; without it, {where}"
            ) from exc
        raise error(
            f"{checkpoint!r} is not in the Hugging Face cache ({reason}); "
            f"fetch it with --set data.download=true on a machine with internet, or {where}"
        ) from exc


@contextmanager
def hub_offline(offline: bool, *modules: ModuleType) -> Iterator[None]:
    """Refuse every Hugging Face Hub request while active, so a file missing from the cache fails at once
    instead of after network timeouts.

    huggingface_hub (and ``datasets.config``, passed in ``modules``) read ``HF_HUB_OFFLINE`` from the
    environment once, at import, so setting the variable here would come too late: the flags are set instead.
    """
    if not offline:
        yield
        return
    from huggingface_hub import constants

    flagged = (constants, *modules)
    saved = [module.HF_HUB_OFFLINE for module in flagged]
    for module in flagged:
        module.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for module, value in zip(flagged, saved, strict=True):
            module.HF_HUB_OFFLINE = value
