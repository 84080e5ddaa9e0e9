//! What the agent changes on the host itself.

pub mod bridge;
