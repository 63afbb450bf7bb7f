"""Local infrastructure and sandboxes of outside systems, for development, tests and the demo.

Not part of the product's core (``hub/``): a user in production points orderhub at their own
Kafka, PostgreSQL, Salesforce, SAP and MES. Here live the real local servers the project
starts for itself (Kafka from Maven Central jars, PostgreSQL and Mosquitto from Debian's
packages) and the sandboxes that stand in for the outside systems (``sandboxes/``).
Every process started here is started detached, recorded by PID and stopped by that PID.
"""
