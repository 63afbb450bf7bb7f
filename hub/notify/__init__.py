"""Notifications: rendering with the plant's templates, the delivery channels (e-mail, signed
webhooks, MQTT) and the durable outbox. The rules of who is told what are ``hub.domain.notify``;
the worker that reads the hub's topics is ``hub.streams.notify``."""
