"""Adapters that run :class:`~ifid_callback.monitor.IFIDMonitor` inside training frameworks.

``lightning.IFIDCallback`` (Lightning), ``accelerate.AccelerateIFID`` (plain Accelerate loops) and
``transformers.IFIDTrainerCallback`` with ``transformers.IFIDTrainer`` (Hugging Face Trainer).
Each module imports its framework; import the one you use.
"""
