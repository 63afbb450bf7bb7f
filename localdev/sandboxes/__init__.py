"""Local stand-ins for the outside systems, each a real server on 127.0.0.1 started by PID.

- ``salesforce``: the Salesforce REST shapes simple-salesforce calls, over TLS, with Change
  Data Capture-shaped events pushed to webhooks (the CRM).
- ``sap``: mock-sap from PyPI, a third party's imitation of SAP's OData services (the ERP).
- ``mes``: an asyncua OPC UA server with the OPC Foundation's ISA-95 Job Control model, and a
  shop floor that reports progress over MQTT through Mosquitto (the MES).
"""
