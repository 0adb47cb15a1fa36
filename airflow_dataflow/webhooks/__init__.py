"""Inbound webhooks: verifying that a request comes from who it claims (HubSpot, ...)."""
