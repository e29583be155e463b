"""The local embedded environment of the ``dev`` stack: real services on loopback, data in ``.devenv/``."""
