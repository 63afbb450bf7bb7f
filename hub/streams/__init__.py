"""The engine's stream processing: the runtime wiring (``app``) over the per-record work (``core``)."""
