"""Training-time iFID: :class:`IFIDMonitor` and the parts it is made of.

========================  ===================================================================
``ifid_monitor``          :class:`IFIDMonitor`, the one object users and adapters drive
``collect``               collecting training latents into the bank (outputs, hooks, encode)
``subsample``             re-encoding a seeded fraction of each batch (``"encode"``)
``schedule``              step counters; when to refresh the index and when to evaluate
``index_keeper``          when the neighbour index must be rebuilt, and rebuilding it
``eval_set``              the fixed evaluation images: chosen, checked, batched
``weights``               which weights an evaluation measures (training, EMA, averaged)
``placement``             following the VAE's device; weights must be on it
``metric_setup``          the monitor's metric: options checked, metric built
``evaluation``            running one evaluation; cached real-image statistics
``results``               the history of results, the latest one
``persistence``           ``state_dict`` / ``load_state_dict``
``grid_columns``          the images of the x | NN(x) | interpolant | reconstruction grid
========================  ===================================================================
"""

from ifid_callback.monitor.collect import LATENT_SOURCES
from ifid_callback.monitor.ifid_monitor import BOOKKEEPING_KEYS, IFIDMonitor

__all__ = ["BOOKKEEPING_KEYS", "LATENT_SOURCES", "IFIDMonitor"]
