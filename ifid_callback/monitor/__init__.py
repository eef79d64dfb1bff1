"""Training-time iFID: :class:`IFIDMonitor` and the parts it is made of.

========================  ===================================================================
``ifid_monitor``          :class:`IFIDMonitor`, the one object users and adapters drive
``collect``               collecting training latents into the bank (outputs, hooks, encode)
``schedule``              step counters; when to refresh the index and when to evaluate
``eval_set``              the fixed evaluation images: chosen, checked, batched
``weights``               which weights an evaluation measures (training, EMA, averaged)
``evaluation``            running one evaluation; cached real-image statistics
``grid_columns``          the images of the x | NN(x) | interpolant | reconstruction grid
========================  ===================================================================
"""

from ifid_callback.monitor.collect import LATENT_SOURCES
from ifid_callback.monitor.ifid_monitor import BOOKKEEPING_KEYS, IFIDMonitor

__all__ = ["BOOKKEEPING_KEYS", "LATENT_SOURCES", "IFIDMonitor"]
