"""RePOPE's corrected labels of the 3,000-question POPE files (pinned, checksummed)."""
from __future__ import annotations

from halluc.benchmarks.spec import BenchmarkData, Remote

# RePOPE relabels the 3,000-question files; YanNeu/RePOPE at bcf22e5.
_REPOPE = "https://raw.githubusercontent.com/YanNeu/RePOPE/bcf22e5690d587cce34e1728af3efdcfaf747d29/annotations/"
_REPOPE_SHA = {"random": "f464fcaf60b24ce2f280cf33f122e000dbdd35c8e88f77c4141c9c2cba864611",
               "popular": "57832b055bae5fd6176278a4f104c98ddd84811f7d26dfcb93d481f6c9da09a5",
               "adversarial": "8c346dbb060bf422ff92e769fa68e5ab3e8a777cb28a26e973387441e05c9ccf"}

DATA = BenchmarkData(tuple(Remote(f"{_REPOPE}coco_repope_{split}.json", f"repope/coco_repope_{split}.json", sha)
                           for split, sha in _REPOPE_SHA.items()),
                     "COCO val2014 images, as for POPE: http://images.cocodataset.org/zips/val2014.zip")
