"""Avro serialisation: schema store, wire formats, compatibility."""
