import math

import dp_accounting
import pytest

from kmi.defenses import calibrate_noise, compute_epsilon


def test_compute_epsilon_matches_dp_accounting_rdp():
    # N=60000, batch 256, sigma 1.1, 60 epochs, delta 1e-5, Poisson sampling.
    q, steps = 256 / 60000, math.ceil(60 * 60000 / 256)
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.1)), steps
        )
    )
    expected = accountant.get_epsilon(1e-5)
    eps = compute_epsilon(1.1, num_examples=60000, batch_size=256, epochs=60, delta=1e-5)
    assert eps == pytest.approx(expected, abs=5e-4)
    assert eps == pytest.approx(2.6, abs=0.05)
    # the same schedule given as a sampling rate and a step count
    assert compute_epsilon(1.1, sampling_rate=q, steps=steps, delta=1e-5) == eps


def test_pld_is_tighter_than_rdp():
    kwargs = dict(num_examples=60000, batch_size=256, epochs=5, delta=1e-5)
    assert compute_epsilon(1.1, accountant="pld", **kwargs) < compute_epsilon(1.1, **kwargs)


def test_default_delta_is_one_over_n():
    a = compute_epsilon(1.0, num_examples=1000, batch_size=100, epochs=2)
    b = compute_epsilon(1.0, num_examples=1000, batch_size=100, epochs=2, delta=1e-3)
    assert a == b


def test_edge_cases():
    assert compute_epsilon(1.0, sampling_rate=0.1, steps=0, delta=1e-5) == 0.0
    assert compute_epsilon(0.0, sampling_rate=0.1, steps=3, delta=1e-5) == math.inf


def test_calibrate_noise_is_the_inverse():
    kwargs = dict(num_examples=10000, batch_size=100, epochs=3, delta=1e-5)
    sigma = calibrate_noise(2.0, **kwargs)
    assert compute_epsilon(sigma, **kwargs) <= 2.0
    assert compute_epsilon(sigma, **kwargs) == pytest.approx(2.0, abs=0.02)
    assert calibrate_noise(8.0, **kwargs) < sigma


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=10, delta=1e-5), "sampling_rate"),
        (dict(sampling_rate=0.1, delta=1e-5), "steps or epochs"),
        (dict(sampling_rate=0.1, steps=10), "delta"),
        (dict(sampling_rate=1.5, steps=10, delta=1e-5), "sampling_rate"),
        (dict(sampling_rate=0.1, steps=10, delta=1e-5, accountant="moments"), "accountant"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_epsilon(1.0, **kwargs)
    with pytest.raises(ValueError, match="Received"):
        compute_epsilon(1.0, **kwargs)


def test_calibrate_rejects_bad_target():
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise(0.0, sampling_rate=0.1, steps=10, delta=1e-5)


def test_unevaluated_rdp_orders_are_not_logged(caplog):
    # a large sampling rate: dp-accounting cannot evaluate the lowest RDP orders and
    # logged a warning for each, at every step of the calibration (56 in the demo)
    import logging

    with caplog.at_level(logging.WARNING):
        sigma = calibrate_noise(3.0, sampling_rate=0.43, steps=10, delta=1e-5)
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
    # the bound from the orders left is the one given
    assert compute_epsilon(sigma, sampling_rate=0.43, steps=10, delta=1e-5) <= 3.0 + 1e-6
