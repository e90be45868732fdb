//! One module per scenario; each returns its figures.

pub mod api;
pub mod bulk;
pub mod memory;
pub mod pods;
pub mod scheduler;
pub mod startup;
pub mod store;
