//! Incremental frame decoder: to be written.
