"""The framework-free pieces every adapter shares: logged names, lower-is-better checks."""

import pytest

from ifid_callback.integrations import common


def test_every_metric_and_the_bank_size_are_logged_under_the_prefix_and_bookkeeping_is_not():
    result = {
        "ifid": 1.0,
        "rfid": 2.0,
        "ifid_ema": 3.0,
        "psnr": 4.0,
        "step": 5,
        "bank_size": 6,
        "num_eval_images": 7,
    }
    assert common.logged_metrics(result, "val/", {"ifid": "iFID"}) == {
        "val/iFID": 1.0,
        "val/rfid": 2.0,
        "val/iFID_ema": 3.0,
        "val/psnr": 4.0,
        "val/bank_size": 6.0,
    }
    assert common.logged_metrics(result, "eval_") == {
        "eval_ifid": 1.0,
        "eval_rfid": 2.0,
        "eval_ifid_ema": 3.0,
        "eval_psnr": 4.0,
        "eval_bank_size": 6.0,
    }


@pytest.mark.parametrize(
    "key, names",
    [("val/ifid", ("ifid", "rfid")), ("val/rfid_ema", ("ifid", "rfid")), ("val/iFID", ("iFID",))],
)
def test_watching_an_fid_to_maximise_is_refused(key, names):
    with pytest.raises(ValueError, match=r"mode='min'"):
        common.check_watch_mode("ModelCheckpoint", key, "max", names)


@pytest.mark.parametrize("key", ["val/loss", "val/ifid_std", "val/psnr"])
def test_other_keys_may_be_maximised(key):
    common.check_watch_mode("ModelCheckpoint", key, "max", ("ifid", "rfid"))


def test_best_metric_on_any_weights_must_be_minimised():
    with pytest.raises(ValueError, match="greater_is_better=False"):
        common.check_best_metric("eval_ifid_ema", True)
    common.check_best_metric("eval_ifid_ema", False)
    common.check_best_metric("eval_loss", True)


def test_the_vae_is_found_on_the_model_or_its_wrapper():
    class VAE:
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    class Model:
        vae = VAE()

    class Wrapper:
        module = Model()

    assert common.find_vae(Model(), "X") is Model.vae
    assert common.find_vae(Wrapper(), "X") is Model.vae
    with pytest.raises(ValueError, match="cannot find the VAE"):
        common.find_vae(object(), "X")
