"""The pure order domain: versions, merges, conflicts, ownership, lifecycle. No Kafka here."""
