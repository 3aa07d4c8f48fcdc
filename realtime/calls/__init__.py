"""Calls (PROTOCOL §10): the pure state machine, ICE servers, and the Redis store."""
