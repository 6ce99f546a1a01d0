"""What a run writes and reads back safely: checkpoints and their JSON sidecars, resuming, file names, atomic
writes, random streams, the metrics log, fault hooks, and the events, progress and reports a run hands out.
May import vicreg.core only."""
