"""camera_info_to_intrinsics validates what a driver sends: each bad CameraInfo raises CameraInfoError with
its reason, and for arbitrary field values the result is usable intrinsics or that error, nothing else."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from oryx_ros.perception.frames import CameraIntrinsics
from oryx_ros.ros.conversions import (
    CAMERA_INFO_ERROR_REASONS,
    CameraInfoError,
    camera_info_to_intrinsics,
    intrinsics_to_camera_info,
)

TS = get_typestore(Stores.ROS2_KILTED)
CAMERA_INFO = TS.types["sensor_msgs/msg/CameraInfo"]
ROI = TS.types["sensor_msgs/msg/RegionOfInterest"]
K = np.array([[500.0, 0.0, 319.5], [0.0, 510.0, 239.5], [0.0, 0.0, 1.0]])
PLUMB_BOB = np.array([0.1, -0.05, 0.001, 0.002, 0.0])


def _info(**changes):
    msg = intrinsics_to_camera_info(CameraIntrinsics(640, 480, K, PLUMB_BOB, "plumb_bob"), CAMERA_INFO)
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def _k(**entries) -> np.ndarray:
    k = K.copy()
    for name, value in entries.items():
        k[{"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2), "k20": (2, 0), "k22": (2, 2)}[name]] = value
    return k.reshape(-1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"k": _k(fx=math.nan)}, "non_finite"),
        ({"k": _k(cy=math.inf)}, "non_finite"),
        ({"k": _k(fy=-math.inf)}, "non_finite"),
        ({"k": np.zeros(9)}, "uncalibrated"),
        ({"k": _k(fx=-500.0)}, "uncalibrated"),
        ({"k": _k(fy=0.0)}, "uncalibrated"),
        ({"k": _k(k22=0.0)}, "bad_k"),
        ({"k": _k(k20=3.0)}, "bad_k"),
        ({"k": np.ones(4)}, "malformed"),
        ({"d": np.array([0.1, math.nan, 0, 0, 0])}, "non_finite"),
        ({"d": np.array([0.1, 0.2, 0.0])}, "distortion_count"),
        ({"d": np.array([0.1] * 5), "distortion_model": "rational_polynomial"}, "distortion_count"),
        ({"d": np.array([0.1] * 5), "distortion_model": "equidistant"}, "distortion_count"),
        ({"width": 0}, "zero_size"),
        ({"height": 0}, "zero_size"),
        ({"binning_x": 1 << 30}, "bad_binning"),
        ({"binning_y": 481}, "bad_binning"),
        ({"binning_x": -2}, "bad_binning"),
        ({"roi": ROI(x_offset=600, y_offset=0, height=100, width=100, do_rectify=False)}, "bad_roi"),
        ({"k": _k(fx=1e-320), "binning_x": 1 << 20, "width": 1 << 21}, "uncalibrated"),
    ],
)
def test_bad_camera_info_raises_with_its_reason(changes, reason) -> None:
    with pytest.raises(CameraInfoError) as caught:
        camera_info_to_intrinsics(_info(**changes))
    assert caught.value.reason == reason
    assert reason in CAMERA_INFO_ERROR_REASONS


@pytest.mark.parametrize(
    ("model", "d", "expected"),
    [
        ("plumb_bob", [], 0),
        ("plumb_bob", [0.0] * 8, 0),  # all zeros of another length: no distortion
        ("plumb_bob", [0.1, 0.0, 0.0, 0.0, 0.0], 5),
        ("rational_polynomial", [0.1] * 8, 8),
        ("equidistant", [0.1] * 4, 4),
        ("", [0.1] * 5, 5),  # no model named: plumb_bob
        ("some_vendor_model", [0.1] * 3, 3),  # unknown: kept; oryx_ros.spatial refuses to undistort with it
    ],
)
def test_distortion_matching_its_model_is_accepted(model, d, expected) -> None:
    intrinsics = camera_info_to_intrinsics(_info(distortion_model=model, d=np.array(d, dtype=np.float64)))
    assert intrinsics.d.size == expected
    assert intrinsics.distortion_model == (model or "plumb_bob")


def test_binning_and_roi_give_a_consistent_size() -> None:
    msg = _info(binning_x=3, binning_y=3, roi=ROI(x_offset=10, y_offset=20, height=301, width=400, do_rectify=False))
    intrinsics = camera_info_to_intrinsics(msg)
    assert (intrinsics.width, intrinsics.height) == (133, 100)
    assert intrinsics.fx == pytest.approx(500 / 3) and intrinsics.cy == pytest.approx((239.5 - 20) / 3)


def test_camera_info_error_keeps_its_reason_through_pickle() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(CameraInfoError("nan", "non_finite")))
    assert (str(err), err.reason) == ("nan", "non_finite")


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, -1.0, 500.0]))
SIZES = st.one_of(st.integers(0, 5000), st.integers(-10, 2**40))


@settings(max_examples=400, deadline=None)
@given(
    width=SIZES,
    height=SIZES,
    k=st.one_of(st.lists(FLOATS, min_size=9, max_size=9), st.lists(FLOATS, max_size=12),
                st.tuples(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6), FLOATS, FLOATS).map(
                    lambda v: [v[0], 0.0, v[2], 0.0, v[1], v[3], 0.0, 0.0, 1.0])),
    d=st.lists(FLOATS, max_size=9),
    model=st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", "", "fisheye"]),
    binning=st.tuples(SIZES, SIZES),
    roi=st.tuples(SIZES, SIZES, SIZES, SIZES),
)
def test_arbitrary_camera_info_gives_usable_intrinsics_or_the_typed_error(width, height, k, d, model, binning,
                                                                          roi) -> None:
    msg = _info(width=width, height=height, k=np.array(k, dtype=np.float64), d=np.array(d, dtype=np.float64),
                distortion_model=model, binning_x=binning[0], binning_y=binning[1],
                roi=ROI(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False))
    try:
        intrinsics = camera_info_to_intrinsics(msg)
    except CameraInfoError as err:
        assert err.reason in CAMERA_INFO_ERROR_REASONS
        return
    assert intrinsics.width > 0 and intrinsics.height > 0
    assert intrinsics.width <= width and intrinsics.height <= height
    assert intrinsics.k.shape == (3, 3) and np.isfinite(intrinsics.k).all()
    assert intrinsics.fx > 0 and intrinsics.fy > 0
    np.testing.assert_allclose(intrinsics.k[2], [0.0, 0.0, 1.0])
    assert np.isfinite(intrinsics.d).all()
    expected = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}.get(intrinsics.distortion_model)
    assert intrinsics.d.size in (0, expected) or expected is None
