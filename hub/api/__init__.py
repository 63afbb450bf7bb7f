"""The people's side: the REST API (``orderhub api``) with local users and roles, over the read
model (reads) and the client API (writes, each answered with the engine's decision)."""
