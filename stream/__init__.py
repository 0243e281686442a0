"""How events flow: settings, the Kafka loop and checkpoint, publisher, dead letters, tools."""
