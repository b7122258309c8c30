//! Segmented, checksummed, group-committed write-ahead log.
