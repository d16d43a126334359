"""Normalisation: SatlasPretrain's Sentinel-2 scaling, fitted covariates, nodata, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mapper.bands import STACK_BANDS, input_bands, model_covariates
from mapper.errors import CheckpointError, InputError
from mapper.normalise import Normaliser, point_features, valid, valid_pixels

ELEV = STACK_BANDS.index("elevation")
ASPECT = STACK_BANDS.index("aspect")
SLOPE = STACK_BANDS.index("slope")


def _stack(seed: int = 0, shape: tuple = (2, 19, 16, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.empty(shape, dtype=np.float32)
    s[..., :9, :, :] = rng.uniform(0.0, 0.5, shape[:-3] + (9,) + shape[-2:])
    s[..., 9:, :, :] = rng.normal(100.0, 30.0, shape[:-3] + (10,) + shape[-2:])
    return s


def test_sentinel2_uses_the_reference_fixed_scaling() -> None:
    norm = Normaliser.fit(_stack())
    s = np.full((19, 1, 7), 0.1, dtype=np.float32)
    s[0, 0] = [0.0078, 0.3318, 0.5, 0.1698, 0.0, -0.01, np.nan]  # red: stretch 78..3318
    s[2, 0] = [0.0167, 0.3335, 0.1751, 0.0, 0.0, 0.0, 0.0]  # blue: 167..3335
    s[6, 0] = [0.408, 0.816, 1.0, 0.0, 0.2, 0.1, 0.1]  # B08: / 8160
    s2, cov = norm(s)
    assert s2.shape == (9, 1, 7) and cov.shape == (10, 1, 7)
    assert s2.dtype == np.float32 and cov.dtype == np.float32
    np.testing.assert_allclose(s2[0, 0], [0, 1, 1, 0.5, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(s2[2, 0, :3], [0, 1, 0.5], atol=1e-5)
    np.testing.assert_allclose(s2[6, 0, :5], [0.5, 1.0, 1.0, 0.0, 0.2 * 1e4 / 8160], atol=1e-5)


def test_covariates_clipped_at_percentiles_and_scaled_to_unit_range() -> None:
    stack = _stack()
    norm = Normaliser.fit(stack)
    cov_values = stack[:, 9:].transpose(1, 0, 2, 3).reshape(10, -1)
    np.testing.assert_allclose(norm.lo, np.percentile(cov_values, 1, axis=1), rtol=1e-5)
    np.testing.assert_allclose(norm.hi, np.percentile(cov_values, 99, axis=1), rtol=1e-5)
    _, cov = norm(stack)
    assert cov.min() == 0.0 and cov.max() == 1.0
    # about 1 % of the values on either side are clipped
    assert 0.005 < (cov == 0).mean() < 0.02 and 0.005 < (cov == 1).mean() < 0.02
    # clip, z-score and min-max compose to (clip(v) - p1) / (p99 - p1)
    v = np.clip(stack[0, 9], norm.lo[0], norm.hi[0])
    z = (v - norm.mean[0]) / norm.std[0]
    zmin = (norm.lo[0] - norm.mean[0]) / norm.std[0]
    zmax = (norm.hi[0] - norm.mean[0]) / norm.std[0]
    np.testing.assert_allclose(cov[0, 0], (z - zmin) / (zmax - zmin), atol=1e-5)


def test_nodata_becomes_zero_and_validity_needs_imagery_and_elevation() -> None:
    stack = _stack()
    norm = Normaliser.fit(stack)
    stack[0, 3, 2, 2] = np.nan  # one S2 band missing -> invalid
    stack[0, ELEV, 4, 4] = np.nan  # elevation missing -> invalid
    stack[0, ELEV + 3, 6, 6] = np.nan  # another covariate missing -> still valid
    s2, cov = norm(stack)
    assert np.isfinite(s2).all() and np.isfinite(cov).all()
    assert s2[0, 3, 2, 2] == 0 and cov[0, 0, 4, 4] == 0 and cov[0, 3, 6, 6] == 0
    ok = valid(stack)
    assert ok.shape == (2, 16, 16)
    assert not ok[0, 2, 2] and not ok[0, 4, 4] and ok[0, 6, 6] and ok[1].all()
    table = stack[0].reshape(19, -1).T
    np.testing.assert_array_equal(valid_pixels(table), ok[0].ravel())
    np.testing.assert_array_equal(norm.valid(stack), ok)


def test_round_trip_through_a_plain_dict() -> None:
    stack = _stack(3)
    norm = Normaliser.fit(stack)
    data = json.loads(json.dumps(norm.to_dict()))  # plain, JSON-able, as in checkpoints
    again = Normaliser.from_dict(data)
    assert again == norm
    for a, b in zip(norm(stack), again(stack), strict=True):
        np.testing.assert_array_equal(a, b)
    data["covariates"] = list(reversed(data["covariates"]))
    with pytest.raises(CheckpointError, match="fitted for other bands"):
        Normaliser.from_dict(data)
    with pytest.raises(CheckpointError, match="normalisation is not"):
        Normaliser.from_dict({"lo": []})
    data["covariates"] = list(reversed(data["covariates"]))
    for damaged in ({**data, "lo": data["lo"][:-1]}, {**data, "std": data["std"] + [1.0]},
                    {**data, "mean": ["x"] * len(data["mean"])}):
        with pytest.raises(CheckpointError, match=r"^m.pt: normalisation is damaged .*; retrain$"):
            Normaliser.from_dict(damaged, "m.pt")


def test_fit_ignores_invalid_pixels_and_refuses_no_data() -> None:
    stack = _stack(4)
    stack[0, 0] = np.nan  # half of the pixels lack red: not used for the fit
    stack[0, 9:] = 1e6
    norm = Normaliser.fit(stack)
    assert max(norm.hi) < 1e5
    with pytest.raises(InputError, match="no valid training pixel"):
        Normaliser.fit(np.full((19, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="not \\[..., 19, H, W\\]"):
        norm(np.zeros((18, 4, 4), dtype=np.float32))


def test_standardised_sentinel2_is_clipped_and_z_scored_per_band() -> None:
    stack = _stack(5)
    norm = Normaliser.fit(stack, s2_scaling="standardised")
    assert norm.s2_scaling == "standardised" and len(norm.s2_mean) == 9
    s2, cov = norm(stack)
    fixed_cov = Normaliser.fit(stack)(stack)[1]
    np.testing.assert_array_equal(cov, fixed_cov)  # covariates do not depend on the scaling
    for b in (0, 4, 8):  # an independent computation per band
        v = stack[:, b].astype(np.float64).ravel()
        p1, p99 = np.percentile(v, [1, 99])
        clipped = np.clip(v, p1, p99)
        z = (clipped - clipped.mean()) / clipped.std()
        np.testing.assert_allclose(s2[:, b].ravel(), z, atol=1e-4)
    assert abs(float(s2.mean())) < 0.05 and 0.9 < float(s2.std()) < 1.1
    stack[1, 2, 3, 3] = np.nan
    assert norm(stack)[0][1, 2, 3, 3] == 0.0  # nodata: the band's mean


def test_the_scaling_is_stored_and_a_version_1_dict_reads_as_the_fixed_scaling() -> None:
    stack = _stack(6)
    norm = Normaliser.fit(stack, s2_scaling="standardised")
    again = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    np.testing.assert_array_equal(norm(stack)[0], again(stack)[0])
    old = Normaliser.fit(stack).to_dict()
    old["format"] = "mapper.normaliser/1"
    for key in ("s2_scaling", "s2_lo", "s2_hi", "s2_mean", "s2_std"):
        del old[key]
    assert Normaliser.from_dict(old) == Normaliser.fit(stack)
    with pytest.raises(ValueError, match="s2_scaling must be one of"):
        Normaliser.fit(stack, s2_scaling="minmax")


def _aspects(degrees: list[float], slope: list[float]) -> np.ndarray:
    """A one-row stack with the given aspects and slopes (the other bands from ``_stack``)."""
    stack = _stack(7, (19, 1, len(degrees)))
    stack[ASPECT, 0] = degrees
    stack[SLOPE, 0] = slope
    return stack


def test_aspect_as_components_has_no_seam_at_north_and_puts_flat_ground_between() -> None:
    """With ``aspect: components`` the aspect band becomes cos and sin in its place: 359 and 1
    degrees are neighbours (as a number they lie at opposite ends), flat ground (no aspect, a
    finite slope) is 0 in both, between every direction, and a pixel without a DEM is nodata
    (0). The other covariates are those of the number encoding, channel for channel."""
    degrees = [359.0, 1.0, 90.0, 180.0, 270.0, np.nan, np.nan]
    stack = _aspects(degrees, [5.0, 5.0, 5.0, 5.0, 5.0, 0.0, np.nan])
    fitted = Normaliser.fit(_stack(8))
    number = fitted
    components = Normaliser(**{**fitted.__dict__, "aspect": "components"})
    assert (number.n_covariates, components.n_covariates) == (10, 11)
    _, by_number = number(stack)
    _, by_components = components(stack)
    assert by_number.shape == (10, 1, 7) and by_components.shape == (11, 1, 7)
    i = ASPECT - 9
    north, east = by_components[i, 0], by_components[i + 1, 0]
    c, s = (np.cos(np.radians(1)) + 1) / 2, np.sin(np.radians(1)) / 2
    np.testing.assert_allclose(north, [c, c, 0.5, 0, 0.5, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(east, [0.5 - s, 0.5 + s, 1, 0.5, 0, 0.5, 0], atol=1e-6)
    assert abs(by_number[i, 0, 0] - by_number[i, 0, 1]) > 0.9  # the number's seam at north
    assert by_number[i, 0, 5] == by_number[i, 0, 6] == 0  # flat reads as nodata, as north
    np.testing.assert_array_equal(np.delete(by_components, [i, i + 1], axis=0),
                                  np.delete(by_number, [i], axis=0))
    assert model_covariates("components")[i:i + 2] == ["aspect_north", "aspect_east"]
    assert input_bands("number") == STACK_BANDS and len(input_bands("components")) == 20
    with pytest.raises(ValueError, match="aspect must be one of"):
        Normaliser(**{**fitted.__dict__, "aspect": "radians"})


def test_random_forest_features_hold_the_same_components_unscaled() -> None:
    stack = _aspects([359.0, 1.0, 90.0, np.nan, np.nan], [5.0, 5.0, 5.0, 0.0, np.nan])
    table = stack.reshape(19, -1).T
    np.testing.assert_array_equal(point_features(table), table)  # as a number: as they are
    feats = point_features(table, "components")
    assert feats.shape == (5, 20)
    _, cov = Normaliser(**{**Normaliser.fit(_stack(8)).__dict__, "aspect": "components"})(stack)
    i = ASPECT
    for k in (0, 1):  # the model's inputs are (c + 1) / 2 of the forest's, nodata 0
        np.testing.assert_allclose(np.nan_to_num((feats[:, i + k] + 1) / 2), cov[i - 9 + k, 0],
                                   atol=1e-6)
    assert np.isnan(feats[4, i:i + 2]).all() and (feats[3, i:i + 2] == 0).all()
    np.testing.assert_array_equal(np.delete(feats, [i, i + 1], axis=1),
                                  np.delete(table, [i], axis=1))
    with pytest.raises(ValueError, match="aspect encoding must be one of"):
        point_features(table, "radians")


def test_the_aspect_encoding_is_stored_and_a_version_2_dict_reads_as_a_number() -> None:
    stack = _stack(9)
    norm = Normaliser.fit(stack, aspect="components")
    data = json.loads(json.dumps(norm.to_dict()))
    assert data["aspect"] == "components" and data["inputs"] == model_covariates("components")
    again = Normaliser.from_dict(data)
    assert again == norm
    for a, b in zip(norm(stack), again(stack), strict=True):
        np.testing.assert_array_equal(a, b)
    old = Normaliser.fit(stack).to_dict()
    old["format"] = "mapper.normaliser/2"
    del old["aspect"], old["inputs"]
    assert Normaliser.from_dict(old) == Normaliser.fit(stack)
    data["aspect"] = "radians"
    with pytest.raises(CheckpointError, match=r"^ckpt.pt: normalisation has an unknown aspect"):
        Normaliser.from_dict(data, "ckpt.pt")


def test_a_covariate_unseen_in_training_maps_to_its_nodata_value_not_to_a_constant() -> None:
    stack = _stack(10)
    climate = STACK_BANDS.index("jan_tmin")
    name = "jan_tmin"
    flat = SLOPE
    training = stack.copy()
    training[:, climate] = np.nan  # no value in any training pixel
    training[:, flat] = 7.0  # constant in every training pixel
    norm = Normaliser.fit(training)
    assert norm.unseen == (name,)
    _, cov = norm(stack)  # the band has values where the map is made
    assert (cov[:, climate - 9] == 0).all()  # as in training: its nodata value
    assert (cov[:, flat - 9] == 0.5).all()  # a constant band where it has data, by design
    again = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm and again.unseen == (name,)
    np.testing.assert_array_equal(again(stack)[1], cov)
    old = norm.to_dict()
    old["format"] = "mapper.normaliser/3"
    del old["unseen"]  # stored before the field: read as it was then made
    assert Normaliser.from_dict(old).unseen == ()
    with pytest.raises(CheckpointError, match="normalisation is damaged"):
        Normaliser.from_dict({**norm.to_dict(), "unseen": ["no_such_band"]})
