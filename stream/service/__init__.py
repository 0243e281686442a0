"""The batch step of the service: features folded into Redis, users scored, changes put in the
outbox, timers, the shared model, the census, the origin guard, and the wiring from settings.
Speaks to Redis, never to Kafka: it gets batches and returns messages through
`stream.kafka.handler`."""
