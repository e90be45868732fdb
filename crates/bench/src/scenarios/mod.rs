//! One module per scenario; each returns its figures.

pub mod api;
pub mod bulk;
pub mod dns;
pub mod footprint;
pub mod memory;
pub mod pods;
pub mod proxy;
pub mod scheduler;
pub mod startup;
pub mod store;
