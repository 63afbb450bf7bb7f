"""Connectors: CRM, ERP and MES plugins built on the connector SDK."""
