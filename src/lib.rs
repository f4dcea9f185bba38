//! imbang: an HTTP load balancer and reverse proxy configured with nginx syntax.

pub mod config;
pub mod upstream;
