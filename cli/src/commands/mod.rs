//! One module per `kiln` command: each makes its calls of the admin service
//! and prints the result.

pub mod apply;
pub mod artifacts;
pub mod cert;
pub mod delete;
pub mod describe;
pub mod events;
pub mod get;
pub mod logs;
pub mod plan;
pub mod power;
pub mod retry;
pub mod token;
pub mod watch;
