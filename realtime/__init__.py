"""Shared domain code of the real-time layer.

Everything that both the edge nodes (`edge/`) and the Celery workers (`workers/`,
`tasks/`) need lives here: settings, Redis key names, the Kafka event envelope,
MongoDB documents, timing policy and the actions that own each state change.
Neither side imports the other; both import this package.
"""
