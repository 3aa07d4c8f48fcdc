"""Side effects taken off the edge: the work Celery tasks (`tasks/`) run, and the
long-running Kafka consumer. Workers reach clients only through the Redis
message queue (a write-only Socket.IO manager)."""
