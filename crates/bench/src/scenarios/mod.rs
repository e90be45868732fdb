//! One module per scenario; each returns its figures.

pub mod api;
pub mod memory;
pub mod startup;
pub mod store;
