"""The service around `features` and `segments`, one room per concern (arrows point down):

- `cli`: the `segstream` command and its table of subcommands;
- `tools`: generate, replay, demo, bench, evaluate and report, local servers;
- `admin`: profiles and erasure, recovery after lost state;
- `service`: the batch step (Redis side): features, scoring, outbox, timers, model sync;
- `kafka`: the consumer loop, checkpoint, publisher, dead letters, topics, handler protocol;
- `ops`: metrics, logs, health.

`settings` and `errors` are shared by every room.
"""
