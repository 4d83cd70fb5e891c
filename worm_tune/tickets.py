"""A trial's ticket as a small file: the mask it pruned with, what the mask is over, when it was drawn.

The ticket is what a lottery-ticket search finds, and what a researcher compares across methods
and seeds (which channels survive, how far two tickets are apart); the network's weights are
not needed for that and are 10,000 times larger. A ticket is a ``.npz`` of bit-packed masks
(``numpy.packbits``, zlib-compressed), so a ResNet-18's channel ticket is about a kilobyte and a
per-weight ticket about 1.4 MB. Read with numpy alone: ``analysis`` loads tickets without torch.

Masks are named: a structured ticket has one mask, ``keep``, over the network's units in the
order the Early-Bird mask is drawn (its BatchNorm channels, or its attention heads, layer by
layer), with ``layers``, how many of them each layer holds, so tickets can be compared layer by
layer; an unstructured ticket has one mask per pruned weight tensor, by parameter name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The file a ticket is written to (in a checkpoint's folder) and logged as (an MLflow artifact).
TICKET_FILE = "ticket.npz"
#: The mask of a structured ticket: one entry per unit, True where the unit is kept.
KEEP = "keep"


@dataclass(frozen=True)
class Ticket:
    """A pruning mask: ``masks`` (True = kept) by name, the ``unit`` they mask (channel, weight or
    head) and the search ``epoch`` it was drawn at. Which trial it is comes from where it is kept
    (a shared sweep's trials that pruned together log one file to each of their runs).
    ``layers``: a structured ticket's units per layer, in mask order (None for an unstructured
    ticket, whose masks are per layer already, and for tickets written before it was recorded)."""

    masks: Mapping[str, np.ndarray]
    unit: str
    epoch: int | None
    layers: tuple[int, ...] | None = None

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def size(self) -> int:
        return int(sum(m.size for m in self.masks.values()))

    def to_bytes(self) -> bytes:
        arrays = {f"mask:{name}": np.packbits(np.asarray(m, dtype=bool).ravel()) for name, m in self.masks.items()}
        shapes = {name: list(np.shape(mask)) for name, mask in self.masks.items()}
        about = {"unit": self.unit, "epoch": self.epoch, "shapes": shapes}
        if self.layers is not None:
            about["layers"] = list(self.layers)
        buf = io.BytesIO()
        np.savez_compressed(buf, about=np.frombuffer(json.dumps(about).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Ticket:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            about = json.loads(npz["about"].tobytes().decode())
            masks = {}
            for name, shape in about["shapes"].items():
                count = int(np.prod(shape, dtype=np.int64))
                masks[name] = np.unpackbits(npz[f"mask:{name}"], count=count).astype(bool).reshape(shape)
        layers = about.get("layers")
        return cls(masks, about["unit"], about["epoch"], None if layers is None else tuple(layers))

    def save(self, path: str | Path) -> int:
        """Write the ticket; its size in bytes."""
        blob = self.to_bytes()
        Path(path).write_bytes(blob)
        return len(blob)

    @classmethod
    def load(cls, path: str | Path) -> Ticket:
        return cls.from_bytes(Path(path).read_bytes())


def overlap(a: Ticket, b: Ticket) -> float:
    """The fraction of units (or weights) two tickets of one network agree on: 1 - normalised Hamming
    distance, the Early-Bird mask distance's complement."""
    if a.masks.keys() != b.masks.keys() or any(a.masks[k].shape != b.masks[k].shape for k in a.masks):
        raise ValueError("the tickets mask different networks (their masks differ in names or shapes)")
    same = sum(int((a.masks[k] == b.masks[k]).sum()) for k in a.masks)
    return same / a.size if a.size else 1.0
