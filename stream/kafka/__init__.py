"""The Kafka side: the consumer loop, checkpoints, the publisher, dead letters, topics, and the
handler protocol a batch step implements. Knows nothing of Redis or of what a batch means."""
