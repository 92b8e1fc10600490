"""The help desk's own package: the orders, the refund policy and the triage model its steps share."""
