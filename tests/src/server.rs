//! Loopback HTTP server.
