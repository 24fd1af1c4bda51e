"""CHAIR's files: the 500 image ids OPERA and CCA evaluate, and the COCO 2014 annotations."""
from __future__ import annotations

from halluc.benchmarks.spec import BenchmarkData, Remote

DATA = BenchmarkData((
    Remote("https://raw.githubusercontent.com/xing0047/cca-llava/77379aa458366980d3bd4a0b9e53c3496a9cb9b1/"
           "playground/data/coco_chair.jsonl", "chair/opera_500_image_ids.jsonl",
           "bd203322025f97c8e6d5a82284f98e91d59fbfc156078b0db1fd194b8d7e7268"),
    Remote("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
           "chair/annotations_trainval2014.zip", None),
), "COCO val2014 images: http://images.cocodataset.org/zips/val2014.zip (unzip; pass --images .../val2014)")
