"""streamscore shared library: configuration, Avro serde, Kafka helpers, producers, replay and sinks."""
