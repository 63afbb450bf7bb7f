"""The read model's revisions, one file each, named ``NNNN_what.py`` with revision id ``NNNN``."""
