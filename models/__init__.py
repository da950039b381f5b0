"""FIFN: the fusion network, its weights and the Fuser (inference)."""
