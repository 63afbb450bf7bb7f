"""ERP connector (SAP S/4HANA sales orders). Arrives with the connector SDK."""
