//! imbang

pub mod config;
pub mod route;
pub mod upstream;
