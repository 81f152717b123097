"""Windows planned and rendered from a store: the outbox's window source and the re-export of
past ranges, shared by the outbox, `sunpm export` and `sdcard` (see README.md)."""
