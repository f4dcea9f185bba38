//! imbang: an HTTP load balancer and reverse proxy configured with nginx syntax.
//!
//! A request passes through these modules, in order:
//!
//! | step    | module       | what happens                                              |
//! |---------|--------------|-----------------------------------------------------------|
//! | accept  | [`server`]   | accept TCP, one task per connection ([`http1`])           |
//! | TLS     | [`tls`]      | on `listen ... ssl`: SNI → server's certificate, handshake, ALPN h2 or HTTP/1.1 |
//! | route   | [`route`]    | `server_name`, then `location`, on the [`snapshot`] in force |
//! | client  | [`realip`]   | the client behind trusted proxies (`set_real_ip_from`)     |
//! | rewrite | [`rewrite`]  | `set`/`rewrite`/`if`/`return`, the location search again on `last` |
//! | pick    | [`upstream`] | balancer + passive health give a peer and an in-flight guard |
//! | forward | [`proxy`]    | rewrite headers, send over [`pool`], retry if safe        |
//! | record  | [`error_log`]| nginx-format error log lines                              |
//!
//! Configuration takes its own path: [`config`] turns text into a validated [`Config`],
//! [`snapshot`] compiles it into tables, and [`reload`] holds the one in force.
//! [`process`] is the nginx-compatible command line around it all; [`privileges`] is how it
//! stops being root before it serves (`user`). Beside the request path,
//! [`checks`] probes peers for `health_check` (their verdicts feed the picks), [`resolve`]
//! looks names up through `resolver` (groups whose `server ... resolve` peers follow DNS, and
//! `proxy_pass` hosts in variables), [`api`] answers NGINX Plus's API from the same state, and
//! [`acme`] obtains and renews the certificates of `acme_certificate` (nginx's ACME module) and
//! answers the CA's challenges. [`stats`] counts connections, requests, TLS handshakes and
//! `status_zone`s without a lock per request, for [`stub_status`], the Prometheus page
//! ([`metrics`]) and the API; [`syslog`] sends log lines to a syslog server. [`stream`] is
//! nginx's `stream { }`: TCP connections balanced over the same upstream machinery.

/// `Box::pin($future)`, with the future built in its allocation rather than moved there. A
/// future's type is as large as its largest state (kilobytes for a request's), and `Box::pin`
/// copies all of it although only the arguments are set before the first poll; allocating
/// first lets the compiler write those few bytes straight into the box (bench/PROFILE.md:
/// 5.3 KiB less `memcpy` per request for the HTTP/1 exchange). A macro, so that the
/// allocation comes before the future is made.
macro_rules! pin_box {
    ($future:expr) => {
        Box::into_pin(Box::write(Box::new_uninit(), $future))
    };
}

pub mod access_log;
pub mod acme;
pub mod api;
pub mod auth;
pub mod checks;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error_log;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod pool;
pub mod privileges;
pub mod process;
pub mod proxy;
pub mod proxy_protocol;
pub mod realip;
pub mod reload;
pub mod resolve;
pub mod rewrite;
pub mod route;
pub mod scratch;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod stream;
pub mod stub_status;
pub mod syslog;
pub mod tls;
pub mod upstream;
pub mod vars;

pub use config::Config;

/// The hash map of the request path's lookups (listen address to virtual hosts, server names,
/// peer address to idle connections): foldhash instead of std's SipHash, which cost ~300
/// instructions per lookup (bench/PROFILE.md). The keys come from the config; a client's `Host`
/// is only looked up, never inserted, so it cannot lengthen the probe sequences.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
