"""Hydra config files shipped with alignkit (``pkg://alignkit.conf``)."""
