//! Extracting members of upstream tar archives.
