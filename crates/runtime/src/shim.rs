//! The per-container shim: a small process of its own (`rkube shim ...`, started with
//! `setsid`) that owns one container: it creates and starts it with runc, copies its stdout and
//! stderr into the log file in the CRI format, reaps it and records how it exited. The agent
//! can restart while containers keep running.
