"""Both trainer adapters reject an unusable monitor configuration with the same clear messages."""

import pytest

from ifid_callback import IFIDMonitor
from tests.helpers import RandomFeatures, decode, encode, smooth_images


@pytest.fixture(params=["lightning", "transformers"])
def adapter(request):
    if request.param == "lightning":
        from ifid_callback.integrations.lightning import IFIDCallback

        return IFIDCallback
    from ifid_callback.integrations.transformers import IFIDTrainerCallback

    return IFIDTrainerCallback


def test_adapters_reject_misconfiguration(adapter):
    with pytest.raises(TypeError, match="IFIDMonitor or None"):
        adapter(monitor="not a monitor")
    with pytest.raises(ValueError, match="needs evaluation images"):
        adapter(bank_capacity=10)
    monitor = IFIDMonitor(
        encoder=encode, decoder=decode, eval_images=smooth_images(8), feature=RandomFeatures(192)
    )
    with pytest.raises(ValueError, match="not both"):
        adapter(monitor=monitor, bank_capacity=10)
    assert adapter(monitor=monitor).monitor is monitor
