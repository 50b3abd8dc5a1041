//! DRBD-class replicated block device engine with an NBD export.
