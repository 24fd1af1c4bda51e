"""Layer bands scaled by depth, and which running rows decode the original view."""
import torch

from halluc.engine.decoding import Decoding
from halluc.engine.steps import depth_band
from halluc.engine.views import ORIGINAL, ViewLayout
from halluc.interventions import Request, Session


def test_depth_band_scales_by_floor_and_is_never_empty():
    assert depth_band(9, 14, 32) == tuple(range(9, 15))
    assert depth_band(9, 14, 28) == tuple(range(7, 13)) and depth_band(9, 14, 40) == tuple(range(11, 18))
    assert depth_band(9, 14, 3) == (0, 1) and depth_band(9, 14, 2) == (0,)
    assert depth_band(19, 27, 3, highest=1) == (1,)  # capped below the last layer
    assert depth_band(30, 31, 2, highest=0) == (0,)


def test_original_rows_follow_views_and_beams(tiny_llava):
    session = Session(Request(tiny_llava, [], ["a", "b"], Decoding()), {}, ViewLayout((ORIGINAL, "x:y"), 2))
    assert session.original_rows(4).tolist() == [True, True, False, False]
    assert session.original_rows(8).tolist() == [True] * 4 + [False] * 4  # 2 beams per input row, in place
    assert session.original_rows(4).dtype == torch.bool and session.original_rows(4) is session.original_rows(4)
    alone = Session(Request(tiny_llava, [], ["a", "b"], Decoding()), {}, ViewLayout((ORIGINAL,), 2))
    assert alone.original_rows(2) is None  # no branches: every row
