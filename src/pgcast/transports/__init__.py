"""Transports move frames between the pure session core and the network."""
