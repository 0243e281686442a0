"""How users are grouped: models, scoring, segment policy. No Redis and no Kafka in here."""
