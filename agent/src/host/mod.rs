//! What the agent changes on the host itself.

pub mod bridge;
pub mod process;
pub mod tap;
