pub mod bench;
pub mod server;
pub mod sim;
