"""Observing the hub while it runs: metrics (``metrics``) and consumer lag (``lag``)."""
