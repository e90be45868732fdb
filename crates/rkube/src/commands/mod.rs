pub mod bench;
pub mod server;
