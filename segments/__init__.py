"""How users are grouped: model protocol, river pipelines, labels, segment policy, snapshots."""
