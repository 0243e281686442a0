"""What we know about a user: the event contract and validation, feature definitions, the store."""
