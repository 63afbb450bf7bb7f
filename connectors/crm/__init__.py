"""CRM connector (Salesforce/HubSpot opportunities to orders). Arrives with the connector SDK."""
