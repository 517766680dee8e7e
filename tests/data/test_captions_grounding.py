"""What the captions and grounding readers share (``records.AnnotatedImages``): records read once, the refusal of a
file with nothing usable, ``len``, skip-by-replacement, the loader's ``epoch``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fiber_fast.data import CaptionsDataset, GroundingDataset
from fiber_fast.data.records import AnnotatedImages


@pytest.mark.parametrize("dataset, item", [(CaptionsDataset, "caption"), (GroundingDataset, "image entry")])
def test_a_file_with_nothing_usable_is_refused(tmp_path: Path, dataset: type, item: str) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"id": 5, "image_id": 1, "caption": "a"}]}))
    with pytest.raises(ValueError, match=rf"ann.json holds no usable {item}$"):
        dataset(path, tmp_path, on_error="skip")


def test_both_readers_share_records_length_and_replacement(synth_dir: Path) -> None:
    captions = CaptionsDataset(synth_dir / "captions_val.json", synth_dir / "images")
    grounding = GroundingDataset(synth_dir / "grounding_val.json", synth_dir / "images", seed=3)
    for dataset in (captions, grounding):
        assert isinstance(dataset, AnnotatedImages)
        assert len(dataset) == len(dataset.records) > 0 and dataset.errors == [] and dataset.epoch == 0
        first = dataset[0]
        assert first["image_id"] == dataset.records[0].image_id and first["errors"] == []
        assert first["caption"] == dataset.records[0].caption
    assert grounding.seed == 3 and captions.on_error == grounding.on_error == "raise"
    assert (captions.image_root, grounding.image_root) == (synth_dir / "images", synth_dir / "images")
