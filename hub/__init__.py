"""orderhub: one canonical order table between CRM, ERP and MES, on Kafka."""
