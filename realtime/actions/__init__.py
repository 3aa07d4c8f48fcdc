"""Actions: the one place that owns each state change and the events it sends.

Transport code (edge handlers, workers) authenticates and validates, then calls
an action. An action writes first, then appends the Kafka envelope to the outbox,
then emits socket events: nothing is announced that was not stored.
"""
