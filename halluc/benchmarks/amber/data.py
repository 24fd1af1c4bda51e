"""AMBER's ground truth and queries (pinned, checksummed); its images are not fetched."""
from __future__ import annotations

from halluc.benchmarks.spec import BenchmarkData, Remote

# AMBER ground truth and queries (Apache-2.0): junyangwang0410/AMBER at 534babf.
_AMBER = "https://raw.githubusercontent.com/junyangwang0410/AMBER/534babf6bbfcce2e735c26289dedfb21cef3c939/data/"
_AMBER_SHA = {"annotations.json": "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797",
              "relation.json": "c4c1491e9bbc3209abc1888c12a1bf8413bdbab8a0d8be04b990a2e7680cf23e",
              "safe_words.txt": "f92cf1123f4578a2630832fac3e6ac4de36212ea55859d3bed4fd233723f4043",
              "metrics.txt": "2fbe2ee584d10e7ce0a568a4902d3d2296727d45f761bf091dd35c4e4b5bc6ac",
              "query/query_all.json": "127680ae61f7d4a92d2f7f07a8deaec07f0689b194d2c7c0f41ead7bd2c5bcf5"}

DATA = BenchmarkData(
    tuple(Remote(_AMBER + name, f"amber/{name}", sha) for name, sha in _AMBER_SHA.items()),
    "AMBER images: the Google Drive link in the junyangwang0410/AMBER README (unzip; pass --images DIR "
    "holding AMBER_1.jpg ... AMBER_1004.jpg)")
