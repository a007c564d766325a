"""The serving allow-list is exactly what `export` emits: regenerated here and compared with the committed file.

Tier 1 (~30 s on 2 cores): scripts the serving model of every exportable kind of model (fp32, int8,
fp16; baseline and C2AL; single- and multi-hot; with and without dense features; every interaction
module) from fresh weights, as `python -m c2al_rec.export.serving_ops --write` does.
"""

from __future__ import annotations

import json

from c2al_rec.export.serving_ops import collect
from c2al_rec.serve.archive_scan import ALLOW_LIST_FILE, KINDS, REGENERATE


def test_allow_list_is_what_export_emits() -> None:
    committed = json.loads(ALLOW_LIST_FILE.read_text())
    regenerated = collect().to_json()
    for kind in KINDS:
        added = sorted(set(regenerated[kind]) - set(committed[kind]))
        dropped = sorted(set(committed[kind]) - set(regenerated[kind]))
        assert not added and not dropped, (
            f"{ALLOW_LIST_FILE.name} {kind}: exports now also use {added} and no longer use {dropped}; "
            f"review and run `{REGENERATE}`"
        )
