"""Monitoring: metrics, tracing, drift, alerts and incidents routed to owners."""
