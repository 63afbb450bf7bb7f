"""MES connector (OPC UA ISA-95 job control). Arrives with the connector SDK."""
