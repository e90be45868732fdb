pub mod bench;
pub mod images;
pub mod server;
pub mod sim;
pub mod agent;
pub mod killall;
