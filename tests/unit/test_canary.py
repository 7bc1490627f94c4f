"""The canary split: the same image always goes the same way, and any ids split in the share asked for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridges.bridge import in_canary


@given(st.text(min_size=1, max_size=128), st.floats(0, 1))
def test_an_image_goes_the_same_way_every_time(image_id: str, share: float) -> None:
    assert in_canary(image_id, share) == in_canary(image_id, share)


@given(st.text(min_size=1, max_size=128))
def test_no_image_goes_to_a_canary_of_share_0_and_every_image_to_one_of_share_1(image_id: str) -> None:
    assert not in_canary(image_id, 0.0) and in_canary(image_id, 1.0)


def test_a_cameras_sequential_ids_split_in_the_share_asked_for() -> None:
    for share in (0.1, 0.3, 0.5):
        picked = sum(in_canary(f"camera-7-{n}", share) for n in range(10_000))
        assert abs(picked / 10_000 - share) < 0.02
