"""Fakes of external services at the transport level: real servers on loopback."""
