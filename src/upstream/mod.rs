//! Which peer gets an attempt: upstream groups, balancing, passive health.

pub mod health;
