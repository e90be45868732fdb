pub mod agent;
pub mod bench;
pub mod images;
pub mod killall;
pub mod server;
pub mod sim;
