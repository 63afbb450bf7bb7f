"""The faust app: thin wiring of topics and tables over the pure domain."""
