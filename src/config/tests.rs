//! Lowering tests: tiny inline configs, exact messages and locations.

use std::path::PathBuf;
use std::time::Duration;

use super::model::*;
use super::*;

/// The options lowering tests load their configs with (also the `lower` modules' tests).
pub(crate) fn opts() -> LoadOptions {
    LoadOptions {
        prefix: PathBuf::from("/prefix/"),
        default_listen_port: 8000,
    }
}

/// `text` loaded; panics with the errors if it does not load.
pub(crate) fn ok(text: &str) -> Config {
    match parse_str("/etc/imbang/t.conf", text, &opts()) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// The errors of loading `text`, as `file:line:col` messages; panics if it loads.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match parse_str("/etc/imbang/t.conf", text, &opts()) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_lessons_site_file_lowers() {
    let c = ok(
        "http {\nupstream domain { \n    server 127.0.0.1:3001;\n    server 127.0.0.1:3002;\n}\nserver { \n    server_name mydomain.xyz; \n  \n    location / { \n             proxy_pass http://domain;\n    }\n}\n}\n",
    );
    let http = c.http.unwrap();
    let up = &http.upstreams[0];
    assert_eq!(up.name, "domain");
    let addrs: Vec<String> = up.peers.iter().map(|p| p.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:3001", "127.0.0.1:3002"]);
    assert_eq!(up.peers[0].max_fails, 1);
    assert_eq!(up.peers[0].fail_timeout, Duration::from_secs(10));
    let server = &http.servers[0];
    assert_eq!(server.names, [ServerName::Exact("mydomain.xyz".into())]);
    assert_eq!(server.listens[0].addr.to_string(), "0.0.0.0:8000");
    let Some(Action::Proxy(pass)) = &server.locations[0].conf.action else {
        panic!("no proxy_pass");
    };
    assert_eq!(
        (pass.upstream.as_str(), pass.uri.as_deref()),
        ("domain", None)
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_place() {
    let got = errors(
        "worker_processes zero;\nhttp {\n    server {\n        listen 127.0.0.1:99999;\n        location / {\n            proxy_pas http://a;\n        }\n        server { }\n    }\n    sendfile maybe;\n}\n",
    );
    assert_eq!(
        got,
        [
            "invalid value \"zero\" in \"worker_processes\" directive in /etc/imbang/t.conf:1:18",
            "invalid value \"maybe\" in \"sendfile\" directive, it must be \"on\" or \"off\" in /etc/imbang/t.conf:10:14",
            "invalid port in \"127.0.0.1:99999\" of the \"listen\" directive in /etc/imbang/t.conf:4:16",
            "\"server\" directive is not allowed here in /etc/imbang/t.conf:8:9",
            "unknown directive \"proxy_pas\" in /etc/imbang/t.conf:6:13",
        ]
    );
}

#[test]
fn context_arity_and_block_errors() {
    let got = errors("listen 80;\nhttp { server { listen; } }\nevents;\nhttp { }\n");
    assert_eq!(
        got,
        [
            "\"listen\" directive is not allowed here in /etc/imbang/t.conf:1:1",
            "invalid number of arguments in \"listen\" directive in /etc/imbang/t.conf:2:17",
            "directive \"events\" has no opening \"{\" in /etc/imbang/t.conf:3:1",
            "\"http\" directive is duplicate in /etc/imbang/t.conf:4:1",
        ]
    );
}

#[test]
fn unknown_upstream_host_is_nginx_s_message() {
    let got = errors("http { server { location / { proxy_pass http://domian.invalid; } } }");
    assert_eq!(
        got,
        ["host not found in upstream \"domian.invalid\" in /etc/imbang/t.conf:1:30"]
    );
}

#[test]
fn user_and_worker_rlimit_nofile_are_read_as_nginx() {
    let c = ok("user www-data;\nworker_rlimit_nofile 4096;\n");
    assert!(c.warnings.iter().all(|w| !w.message.contains("user")));
    let user = c.main.user.expect("user");
    // The group defaults to the user's name, as nginx's.
    assert_eq!(
        (
            user.user.as_str(),
            user.group.as_str(),
            user.location.as_str()
        ),
        ("www-data", "www-data", "/etc/imbang/t.conf:1:1")
    );
    assert_eq!(c.main.rlimit_nofile, Some(4096));
    let user = ok("  user nobody nogroup;").main.user.expect("user");
    assert_eq!(
        (user.user.as_str(), user.group.as_str()),
        ("nobody", "nogroup")
    );
    assert_eq!(
        errors("user a;\nuser b;\nworker_rlimit_nofile 1k;\nuser;\n"),
        [
            "\"user\" directive is duplicate in /etc/imbang/t.conf:2:1",
            "\"worker_rlimit_nofile\" directive invalid number in /etc/imbang/t.conf:3:1",
            "invalid number of arguments in \"user\" directive in /etc/imbang/t.conf:4:1",
        ]
    );
}

#[test]
fn no_effect_directives_warn() {
    let c = ok("pcre_jit on;\nhttp { gzip_buffers 16 8k; }\n");
    let w: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("{} in {}", w.message, w.location))
        .collect();
    assert_eq!(
        w,
        [
            "no \"events\" section in configuration (nginx requires one; imbang does not) in /etc/imbang/t.conf:1:1",
            "the \"pcre_jit\" directive has no effect in imbang: regexes are always compiled in /etc/imbang/t.conf:1:1",
            "the \"gzip_buffers\" directive has no effect in imbang: imbang hands compressed bytes on as zlib makes them, in buffers it sizes itself in /etc/imbang/t.conf:2:8",
        ]
    );
}

#[test]
fn proxy_settings_inherit_and_proxy_set_header_replaces_as_nginx() {
    let c = ok(
        "http {\n proxy_read_timeout 5s;\n proxy_set_header X-A a;\n upstream u { server 127.0.0.1:1; }\n server {\n  listen 127.0.0.1:8080;\n  location /a { proxy_pass http://u; }\n  location /b { proxy_set_header X-B b; proxy_connect_timeout 2; proxy_pass http://u/; }\n }\n}\n",
    );
    let s = &c.http.unwrap().servers[0];
    let a = &s.locations[0].conf.proxy;
    let b = &s.locations[1].conf.proxy;
    assert_eq!(a.read_timeout, Duration::from_secs(5));
    assert_eq!(a.set_headers, [("X-A".to_owned(), "a".to_owned())]);
    assert_eq!(a.connect_timeout, Duration::from_secs(60));
    assert_eq!(b.read_timeout, Duration::from_secs(5));
    assert_eq!(b.set_headers, [("X-B".to_owned(), "b".to_owned())]);
    assert_eq!(b.connect_timeout, Duration::from_secs(2));
}

#[test]
fn peer_parameters_and_errors() {
    let c = ok(
        "http { upstream u { server 127.0.0.1:1 weight=3 max_fails=0 fail_timeout=30s max_conns=7; server 127.0.0.1:2 backup; server 127.0.0.1:3 down; } }",
    );
    let p = &c.http.unwrap().upstreams[0].peers;
    assert_eq!((p[0].weight, p[0].max_fails, p[0].max_conns), (3, 0, 7));
    assert_eq!(p[0].fail_timeout, Duration::from_secs(30));
    assert!(p[1].backup && !p[1].down && p[2].down);
    let got = errors(
        "http { upstream u { server 127.0.0.1:1 weight=0 bogus; } upstream u { server 127.0.0.1:1; } upstream e { } }",
    );
    assert_eq!(
        got,
        [
            "invalid parameter \"weight=0\" in /etc/imbang/t.conf:1:40",
            "invalid parameter \"bogus\" in /etc/imbang/t.conf:1:49",
            "duplicate upstream \"u\" in /etc/imbang/t.conf:1:58",
            "no servers are inside upstream in /etc/imbang/t.conf:1:93",
        ]
    );
}

#[test]
fn listen_forms_and_defaults() {
    let c = ok(
        "http { server { listen 8080 default_server; listen [::1]:81; server_name .example.com www.* ~^a; } server { } }",
    );
    let http = c.http.unwrap();
    let l: Vec<(String, bool)> = http.servers[0]
        .listens
        .iter()
        .map(|l| (l.addr.to_string(), l.default_server))
        .collect();
    assert_eq!(
        l,
        [("0.0.0.0:8080".into(), true), ("[::1]:81".into(), false)]
    );
    assert_eq!(
        http.servers[0].names,
        [
            ServerName::LeadingWildcard {
                suffix: ".example.com".into(),
                also_bare: true
            },
            ServerName::TrailingWildcard("www.".into()),
            ServerName::Regex("^a".into()),
        ]
    );
    assert_eq!(http.servers[1].listens[0].addr.to_string(), "0.0.0.0:8000");
    assert_eq!(http.servers[1].names, [ServerName::Exact(String::new())]);
    let dup = errors(
        "http { server { listen 8080 default_server; } server { listen 8080 default_server; } }",
    );
    assert_eq!(
        dup,
        ["a duplicate default server for 0.0.0.0:8080 in /etc/imbang/t.conf:1:56"]
    );
}

#[test]
fn reuseport_is_taken_and_said_once_per_address() {
    let c = ok("http { server { listen 8080 reuseport; } server { listen 8080; listen 81; } }");
    let reuseport_warnings: Vec<String> = warnings(&c)
        .into_iter()
        .filter(|w| w.contains("reuseport"))
        .collect();
    assert_eq!(reuseport_warnings, Vec::<String>::new());
    let http = c.http.unwrap();
    let l: Vec<(String, bool)> = http
        .servers
        .iter()
        .flat_map(|s| &s.listens)
        .map(|l| (l.addr.to_string(), l.reuseport))
        .collect();
    assert_eq!(
        l,
        [
            ("0.0.0.0:8080".into(), true),
            ("0.0.0.0:8080".into(), false),
            ("0.0.0.0:81".into(), false)
        ]
    );
    let dup =
        errors("http { server { listen 8080 reuseport; } server { listen 8080 reuseport; } }");
    assert_eq!(
        dup,
        ["duplicate listen options for 0.0.0.0:8080 in /etc/imbang/t.conf:1:51"]
    );
}

#[test]
fn proxy_pass_uri_in_regex_location_is_an_error() {
    let got = errors(
        "http { upstream u { server 127.0.0.1:1; } server { location ~ \\.php$ { proxy_pass http://u/x; } } }",
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            "\"proxy_pass\" cannot have URI part in location given by regular expression"
        ),
        "{}",
        got[0]
    );
}

#[test]
fn proxy_pass_with_variables_may_have_a_uri_anywhere() {
    let c = ok(
        "http {\n server {\n  location ~ ^/x/(.*)$ { proxy_pass http://$arg_up/$1$is_args$args; }\n  location @named { proxy_pass HTTP://10.0.0.1:81$request_uri; }\n  location / { proxy_pass $scheme://b; }\n }\n}\n",
    );
    let server = &c.http.unwrap().servers[0];
    let urls: Vec<(&str, &str)> = server
        .locations
        .iter()
        .map(|l| match &l.conf.action {
            Some(Action::ProxyVars(p)) => (p.url.as_str(), p.location.as_str()),
            other => panic!("not proxy_pass with variables: {other:?}"),
        })
        .collect();
    assert_eq!(
        urls,
        [
            ("http://$arg_up/$1$is_args$args", "/etc/imbang/t.conf:3:37"),
            ("HTTP://10.0.0.1:81$request_uri", "/etc/imbang/t.conf:4:32"),
            ("$scheme://b", "/etc/imbang/t.conf:5:27"),
        ]
    );
    // No implicit group is made for a URL with variables.
    assert!(c.warnings.iter().all(|w| !w.message.contains("proxy_pass")));
}

#[test]
fn proxy_pass_with_variables_refuses_a_scheme_that_cannot_work() {
    let got = errors(
        "http { server {\n location /a { proxy_pass https://$host; }\n location /b { proxy_pass ftp://$host; }\n location /c { proxy_pass httpx$host; }\n} }",
    );
    assert_eq!(
        got,
        [
            "invalid URL prefix in \"ftp://$host\" in /etc/imbang/t.conf:3:27",
            "invalid URL prefix in \"httpx$host\" in /etc/imbang/t.conf:4:27",
        ]
    );
}

#[test]
fn resolver_is_inherited_and_followed_by_upstreams() {
    let c = ok("http {
        resolver 127.0.0.53 [::1]:5353 valid=10s ipv6=off;
        resolver_timeout 5s;
        upstream app { zone app 64k; server app.internal:8080 resolve weight=3; server api.internal service=http resolve; server 10.0.0.1:80; }
        upstream own { zone own 64k; resolver 10.0.0.2; server own.internal resolve; }
        server {
            location / { proxy_pass http://$host; }
            location /b { resolver 10.0.0.9; proxy_pass http://$host; }
        }
    }");
    let http = c.http.unwrap();
    let server = &http.servers[0];
    let at = |i: usize| server.locations[i].conf.resolver.clone().unwrap();
    let inherited = at(0);
    assert_eq!(
        inherited.spec.servers,
        [
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(inherited.spec.valid, Some(Duration::from_secs(10)));
    assert!(inherited.spec.ipv4 && !inherited.spec.ipv6);
    assert_eq!(inherited.timeout, Duration::from_secs(5));
    assert_eq!(at(1).spec.servers, ["10.0.0.9:53".parse().unwrap()]);
    assert_eq!(at(1).timeout, Duration::from_secs(5));
    let app = &http.upstreams[0];
    // The address line is a fixed peer; the names follow DNS with their line's parameters.
    assert_eq!(app.peers.len(), 1);
    let resolve = app.resolve.as_ref().unwrap();
    assert_eq!(resolve.resolver, inherited);
    let names: Vec<(String, u16, u32)> = (resolve.names.iter())
        .map(|n| (n.query_name(), n.port, n.template.weight))
        .collect();
    assert_eq!(
        names,
        [
            ("app.internal".to_owned(), 8080, 3),
            ("_http._tcp.api.internal".to_owned(), 0, 1)
        ]
    );
    let own = http.upstreams[1].resolve.as_ref().unwrap();
    assert_eq!(own.resolver.spec.servers, ["10.0.0.2:53".parse().unwrap()]);
    // The upstream's own `resolver_timeout`, or else the http level's.
    assert_eq!(own.resolver.timeout, Duration::from_secs(5));
}

#[test]
fn proxy_redirect_default_needs_a_literal_proxy_pass_before_it() {
    let got = errors(
        "http { server {\n location /a { proxy_pass http://$host; proxy_redirect default; }\n location /b { proxy_redirect default; proxy_pass http://127.0.0.1:1/; }\n location /c { proxy_pass http://127.0.0.1:1/; proxy_redirect default; }\n location /d { proxy_pass http://$host; proxy_redirect off; proxy_redirect http://a/ /; }\n} }",
    );
    assert_eq!(
        got,
        [
            "\"proxy_redirect default\" cannot be used with \"proxy_pass\" directive with variables in /etc/imbang/t.conf:2:41",
            "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive in /etc/imbang/t.conf:3:16",
        ]
    );
}

#[test]
fn main_context_paths_resolve_against_the_prefix() {
    let c = ok("pid run/i.pid;\nerror_log logs/e.log warn;\ndaemon off;\n");
    assert_eq!(c.main.pid, PathBuf::from("/prefix/run/i.pid"));
    assert!(!c.main.daemon);
    assert_eq!(
        c.main.error_log,
        [ErrorLogSpec {
            target: LogTarget::File("/prefix/logs/e.log".into()),
            level: LogLevel::Warn
        }]
    );
}

fn methods(text: &str) -> Vec<BalanceMethod> {
    let c = ok(text);
    c.http
        .unwrap()
        .upstreams
        .into_iter()
        .map(|u| u.method)
        .collect()
}

fn warnings(c: &Config) -> Vec<String> {
    c.warnings
        .iter()
        .map(|w| format!("{} in {}", w.message, w.location))
        .collect()
}

#[test]
fn balancing_methods_lower() {
    let got = methods(
        "http {\n upstream rr { server 127.0.0.1:1; }\n upstream lc { least_conn; server 127.0.0.1:1; }\n upstream ip { ip_hash; server 127.0.0.1:1; }\n upstream h { hash $request_uri; server 127.0.0.1:1; }\n upstream ch { server 127.0.0.1:1; hash \"$host$uri\" consistent; }\n upstream r { random; server 127.0.0.1:1; }\n upstream r2 { random two; server 127.0.0.1:1; }\n upstream r2lc { random two least_conn; server 127.0.0.1:1; }\n}\n",
    );
    assert_eq!(
        got,
        [
            BalanceMethod::RoundRobin,
            BalanceMethod::LeastConn,
            BalanceMethod::IpHash,
            BalanceMethod::Hash {
                key: "$request_uri".into(),
                consistent: false,
                bounded: None,
                location: "/etc/imbang/t.conf:5:15".into(),
            },
            BalanceMethod::Hash {
                key: "$host$uri".into(),
                consistent: true,
                bounded: None,
                location: "/etc/imbang/t.conf:6:36".into(),
            },
            BalanceMethod::Random {
                two: false,
                least_time: None
            },
            BalanceMethod::Random {
                two: true,
                least_time: None
            },
            BalanceMethod::Random {
                two: true,
                least_time: None
            },
        ]
    );
}

#[test]
fn a_second_method_warns_as_nginx_and_the_last_wins() {
    let c = ok(
        "events {}\nhttp {\n upstream u {\n  least_conn;\n  ip_hash;\n  server 127.0.0.1:1;\n }\n upstream q { random two; random; server 127.0.0.1:1; }\n}\n",
    );
    assert_eq!(
        warnings(&c),
        [
            "load balancing method redefined in /etc/imbang/t.conf:5:3",
            "load balancing method redefined in /etc/imbang/t.conf:8:27",
        ]
    );
    let ups = c.http.unwrap().upstreams;
    assert_eq!(ups[0].method, BalanceMethod::IpHash);
    // nginx keeps `two` once an upstream has said it.
    assert_eq!(
        ups[1].method,
        BalanceMethod::Random {
            two: true,
            least_time: None
        }
    );
}

#[test]
fn backup_is_refused_after_a_method_that_cannot_use_it() {
    let got = errors(
        "http {\n upstream a { hash $uri; server 127.0.0.1:1; server 127.0.0.1:2 backup; }\n upstream b { ip_hash; server 127.0.0.1:1 backup; }\n upstream c { random two; server 127.0.0.1:1 weight=2 backup; }\n}\n",
    );
    assert_eq!(
        got,
        [
            "balancing method does not support parameter \"backup\" in /etc/imbang/t.conf:2:65",
            "balancing method does not support parameter \"backup\" in /etc/imbang/t.conf:3:43",
            "balancing method does not support parameter \"backup\" in /etc/imbang/t.conf:4:55",
        ]
    );
    // As in nginx, a `server` line read before the method keeps its `backup`, and least_conn
    // takes backups wherever they are written.
    let c = ok(
        "http {\n upstream a { server 127.0.0.1:1; server 127.0.0.1:2 backup; ip_hash; }\n upstream b { least_conn; server 127.0.0.1:1; server 127.0.0.1:2 backup; }\n upstream c { hash $uri; least_conn; server 127.0.0.1:1; server 127.0.0.1:2 backup; }\n}\n",
    );
    let ups = c.http.unwrap().upstreams;
    assert!(ups.iter().all(|u| u.peers[1].backup));
    assert_eq!(ups[0].method, BalanceMethod::IpHash);
}

#[test]
fn slow_start_is_a_server_parameter_refused_after_hash_ip_hash_and_random() {
    let c = ok(
        "http {\n upstream a { server 127.0.0.1:1 slow_start=30s; server 127.0.0.1:2; }\n upstream b { least_conn; server 127.0.0.1:1 slow_start=1m weight=2; }\n upstream c { server 127.0.0.1:1 slow_start=5s; hash $uri; }\n}\n",
    );
    let ups = c.http.unwrap().upstreams;
    assert_eq!(ups[0].peers[0].slow_start, Duration::from_secs(30));
    assert_eq!(ups[0].peers[1].slow_start, Duration::ZERO);
    assert_eq!(ups[1].peers[0].slow_start, Duration::from_secs(60));
    // As with `backup`, a line read before the method keeps it (it then only matters to the
    // round-robin fallback).
    assert_eq!(ups[2].peers[0].slow_start, Duration::from_secs(5));
    let got = errors(
        "http {\n upstream a { hash $uri; server 127.0.0.1:1 slow_start=30s; }\n upstream b { ip_hash; server 127.0.0.1:1 slow_start=30s; }\n upstream c { random two; server 127.0.0.1:1 slow_start=30s; }\n upstream d { server 127.0.0.1:1 slow_start=soon; server 127.0.0.1:2 slow_start; }\n}\n",
    );
    assert_eq!(
        got,
        [
            "balancing method does not support parameter \"slow_start=30s\" in /etc/imbang/t.conf:2:45",
            "balancing method does not support parameter \"slow_start=30s\" in /etc/imbang/t.conf:3:43",
            "balancing method does not support parameter \"slow_start=30s\" in /etc/imbang/t.conf:4:46",
            "invalid parameter \"slow_start=soon\" in /etc/imbang/t.conf:5:34",
            "invalid parameter \"slow_start\" in /etc/imbang/t.conf:5:70",
        ]
    );
}

#[test]
fn queue_lowers_with_nginx_plus_s_default_timeout() {
    let c = ok(
        "events {}\nhttp {\n upstream a { least_conn; server 127.0.0.1:1 max_conns=2; queue 100; }\n upstream b { server 127.0.0.1:1; queue 5 timeout=10s; }\n upstream c { server 127.0.0.1:1; }\n upstream d { queue 1; ip_hash; server 127.0.0.1:1; }\n}\n",
    );
    assert_eq!(
        warnings(&c),
        [
            "\"queue\" before the balancing method has no effect in NGINX Plus; imbang applies it in /etc/imbang/t.conf:6:15"
        ]
    );
    let ups = c.http.unwrap().upstreams;
    let queues: Vec<_> = ups.iter().map(|u| u.queue).collect();
    let q = |size, secs| {
        Some(QueueSpec {
            size,
            timeout: Duration::from_secs(secs),
        })
    };
    assert_eq!(queues, [q(100, 60), q(5, 10), None, q(1, 60)]);
    let got = errors(
        "http {\n upstream a { server 127.0.0.1:1; queue many; }\n upstream b { server 127.0.0.1:1; queue 5 wait=1s; }\n upstream c { server 127.0.0.1:1; queue 5; queue 6; }\n queue 5;\n}\n",
    );
    assert_eq!(
        got,
        [
            "invalid value \"many\" in \"queue\" directive in /etc/imbang/t.conf:2:41",
            "invalid parameter \"wait=1s\" in /etc/imbang/t.conf:3:43",
            "\"queue\" directive is duplicate in /etc/imbang/t.conf:4:44",
            "\"queue\" directive is not allowed here in /etc/imbang/t.conf:5:2",
        ]
    );
}

#[test]
fn least_time_and_random_two_least_time_lower_as_nginx_plus_writes_them() {
    let got = methods(
        "http {\n upstream a { least_time header; server 127.0.0.1:1; }\n upstream b { least_time last_byte inflight; server 127.0.0.1:1 backup slow_start=10s; }\n upstream c { random two least_time=header; server 127.0.0.1:1; }\n upstream d { random two least_time=last_byte; server 127.0.0.1:1; }\n}\n",
    );
    let lt = |mode, inflight| BalanceMethod::LeastTime { mode, inflight };
    let r2 = |mode| BalanceMethod::Random {
        two: true,
        least_time: Some(mode),
    };
    assert_eq!(
        got,
        [
            lt(TimeMode::Header, false),
            lt(TimeMode::LastByte, true),
            r2(TimeMode::Header),
            r2(TimeMode::LastByte),
        ]
    );
    let got = errors(
        "http {\n upstream u {\n  least_time;\n  least_time first_byte;\n  least_time header all;\n  random two least_time;\n  random two least_time=body;\n  server 127.0.0.1:1;\n }\n}\n",
    );
    assert_eq!(
        got,
        [
            "invalid number of arguments in \"least_time\" directive in /etc/imbang/t.conf:3:3",
            "invalid parameter \"first_byte\" in /etc/imbang/t.conf:4:14",
            "invalid parameter \"all\" in /etc/imbang/t.conf:5:21",
            "invalid parameter \"least_time\" in /etc/imbang/t.conf:6:14",
            "invalid parameter \"least_time=body\" in /etc/imbang/t.conf:7:14",
        ]
    );
}

#[test]
fn bounded_consistent_hash_takes_a_load_factor() {
    let got = methods(
        "http {\n upstream a { hash $uri consistent bounded=1.25; server 127.0.0.1:1; }\n upstream b { hash $uri consistent bounded=2; server 127.0.0.1:1; }\n}\n",
    );
    let bounded: Vec<_> = (got.iter())
        .map(|m| match m {
            BalanceMethod::Hash { bounded, .. } => *bounded,
            _ => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(bounded, [Some(1250), Some(2000)]);
    let got = errors(
        "http {\n upstream u {\n  hash $uri bounded=1.25;\n  hash $uri consistent bounded=0.9;\n  hash $uri consistent bounded=1.2345;\n  hash $uri consistent bounded=;\n  hash $uri consistent bounded;\n  server 127.0.0.1:1;\n }\n}\n",
    );
    assert_eq!(
        got,
        [
            "invalid parameter \"bounded=1.25\" in /etc/imbang/t.conf:3:13",
            "invalid parameter \"bounded=0.9\" in /etc/imbang/t.conf:4:24",
            "invalid parameter \"bounded=1.2345\" in /etc/imbang/t.conf:5:24",
            "invalid parameter \"bounded=\" in /etc/imbang/t.conf:6:24",
            "invalid parameter \"bounded\" in /etc/imbang/t.conf:7:24",
        ]
    );
}

#[test]
fn balancing_method_argument_errors_use_nginx_s_words() {
    let got = errors(
        "http {\n upstream u {\n  hash $uri bogus;\n  random one;\n  random two most_conn;\n  ip_hash on;\n  least_conn x;\n  hash;\n  random two least_conn x;\n  server 127.0.0.1:1;\n }\n hash $uri;\n}\n",
    );
    assert_eq!(
        got,
        [
            "invalid parameter \"bogus\" in /etc/imbang/t.conf:3:13",
            "invalid parameter \"one\" in /etc/imbang/t.conf:4:10",
            "invalid parameter \"most_conn\" in /etc/imbang/t.conf:5:14",
            "invalid number of arguments in \"ip_hash\" directive in /etc/imbang/t.conf:6:3",
            "invalid number of arguments in \"least_conn\" directive in /etc/imbang/t.conf:7:3",
            "invalid number of arguments in \"hash\" directive in /etc/imbang/t.conf:8:3",
            "invalid number of arguments in \"random\" directive in /etc/imbang/t.conf:9:3",
            "\"hash\" directive is not allowed here in /etc/imbang/t.conf:12:2",
        ]
    );
}

#[test]
fn server_and_location_error_logs_join_the_http_level_ones() {
    let c = ok(
        "events {}\nhttp {\n error_log a.log;\n server { error_log b.log warn; location / { error_log c.log; return 200; } }\n}\n",
    );
    let targets: Vec<String> = c
        .http
        .unwrap()
        .error_log
        .iter()
        .map(|l| format!("{:?} {}", l.target, l.level.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            "File(\"/prefix/a.log\") error",
            "File(\"/prefix/b.log\") warn",
            "File(\"/prefix/c.log\") error",
        ]
    );
}

#[test]
fn access_log_parameters_lower_to_one_buffer_per_file() {
    let c = ok(concat!(
        "events {}\nhttp {\n log_format f '$uri';\n",
        " access_log a.log f buffer=32k flush=5s if=$arg_log;\n",
        " access_log z.log f gzip;\n",
        " access_log g9.log f gzip=9 buffer=1m;\n",
        " server {\n",
        "  location / { access_log a.log f buffer=32k flush=5s; access_log a.log; }\n",
        "  location /p { access_log plain.log f if=0; }\n",
        " }\n}\n",
    ));
    let http = c.http.unwrap();
    let buffer = |name: &str| http.log_buffers.get(&PathBuf::from("/prefix/").join(name));
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(
        buffer("a.log"),
        Some(&LogBuffer {
            size: 32 * 1024,
            flush: secs(5),
            gzip: None
        })
    );
    // nginx: `gzip` alone buffers 64k at level 1.
    assert_eq!(
        buffer("z.log"),
        Some(&LogBuffer {
            size: 64 * 1024,
            flush: None,
            gzip: Some(1)
        })
    );
    assert_eq!(
        buffer("g9.log").map(|b| (b.size, b.gzip)),
        Some((1 << 20, Some(9)))
    );
    assert_eq!(buffer("plain.log"), None);
    assert_eq!(http.log_buffers.len(), 3);
    let server = &http.servers[0];
    let condition = |i: usize| -> Vec<Option<String>> {
        let logs = &server.locations[i].conf.access_log;
        logs.iter()
            .map(|l| {
                l.condition
                    .as_ref()
                    .map(|c| format!("{} {}", c.text, c.location))
            })
            .collect()
    };
    assert_eq!(condition(0), [None, None]);
    assert_eq!(condition(1), [Some("0 /etc/imbang/t.conf:9:40".to_owned())]);
    let http_level = &server.conf.access_log;
    assert_eq!(
        http_level[0].condition.as_ref().map(|c| c.text.as_str()),
        Some("$arg_log")
    );
}

#[test]
fn access_log_parameter_errors_use_nginx_s_words() {
    let got = errors(concat!(
        "events {}\nhttp {\n log_format f '$uri';\n",
        " access_log a.log f buffer=0;\n",
        " access_log a.log f buffer=12q;\n",
        " access_log a.log f buffer=8k flush=never;\n",
        " access_log a.log f flush=0s buffer=8k;\n",
        " access_log b.log f flush=1m;\n",
        " access_log a.log f gzip=10;\n",
        " access_log a.log f gzip=;\n",
        " access_log a.log f gzipped;\n",
        " access_log a.log f buffer=8k bogus;\n",
        " access_log a.log buffer=8k;\n",
        " access_log off f;\n",
        " access_log logs/$host.log;\n",
        " server {\n",
        "  access_log c.log f buffer=8k;\n",
        "  location / { access_log c.log f buffer=8k flush=1s; }\n",
        "  location /x { access_log c.log f buffer=8k gzip; }\n",
        "  location /y { access_log c.log f buffer=8k; access_log c.log; }\n",
        " }\n}\n",
    ));
    assert_eq!(
        got,
        [
            "invalid buffer size \"0\" in /etc/imbang/t.conf:4:21",
            "invalid buffer size \"12q\" in /etc/imbang/t.conf:5:21",
            "invalid flush time \"never\" in /etc/imbang/t.conf:6:31",
            "invalid flush time \"0s\" in /etc/imbang/t.conf:7:21",
            "no buffer is defined for access_log \"b.log\" in /etc/imbang/t.conf:8:21",
            "invalid compression level \"10\" in /etc/imbang/t.conf:9:21",
            "invalid compression level \"\" in /etc/imbang/t.conf:10:21",
            "invalid parameter \"gzipped\" in /etc/imbang/t.conf:11:21",
            "invalid parameter \"bogus\" in /etc/imbang/t.conf:12:31",
            "unknown log format \"buffer=8k\" in /etc/imbang/t.conf:13:19",
            "invalid number of arguments in \"access_log\" directive in /etc/imbang/t.conf:14:2",
            "variables in the path of \"access_log\" are not supported by imbang yet in /etc/imbang/t.conf:15:13",
            "access_log \"c.log\" already defined with conflicting parameters in /etc/imbang/t.conf:18:27",
            "access_log \"c.log\" already defined with conflicting parameters in /etc/imbang/t.conf:19:28",
        ]
    );
}

#[test]
fn health_check_reads_its_parameters_and_the_locations_proxy_settings() {
    let c = ok(r#"http {
  match ok { status 200-299 304; header Content-Type ~ "^text/"; header ! X-Down; body !~ maint; }
  upstream app { server 127.0.0.1:3001; server 127.0.0.1:3002; }
  server {
    location / {
      proxy_pass http://app;
      proxy_connect_timeout 2s; proxy_read_timeout 3s; proxy_set_header Host app.example;
      health_check interval=2s jitter=500ms fails=3 passes=2 uri=/healthz port=9000 match=ok mandatory persistent;
    }
    location /b { proxy_pass http://app; proxy_set_header Host $host; health_check; }
  }
}"#);
    let http = c.http.unwrap();
    let [full, plain] = &http.health_checks[..] else {
        panic!("two checks: {:?}", http.health_checks);
    };
    assert_eq!(full.upstream, "app");
    assert_eq!((full.uri.as_str(), full.port), ("/healthz", Some(9000)));
    assert_eq!(
        (full.interval, full.jitter),
        (Duration::from_secs(2), Duration::from_millis(500))
    );
    assert_eq!((full.fails, full.passes), (3, 2));
    assert!(full.mandatory && full.persistent);
    assert_eq!(full.host, "app.example");
    assert_eq!(
        (full.connect_timeout, full.read_timeout),
        (Duration::from_secs(2), Duration::from_secs(3))
    );
    let m = full.matcher.as_ref().unwrap();
    let status = m.status.as_ref().unwrap();
    assert_eq!(status.ranges, [(200, 299), (304, 304)]);
    assert!(status.passes(204) && status.passes(304) && !status.passes(302));
    assert_eq!(m.headers.len(), 2);
    assert!(m.body.as_ref().unwrap().negate);
    assert_eq!(full.location, "/etc/imbang/t.conf:8:7");
    // NGINX Plus's defaults; a Host with variables falls back to the proxy_pass host.
    assert_eq!((plain.uri.as_str(), plain.port), ("/", None));
    assert_eq!(
        (plain.interval, plain.fails, plain.passes),
        (Duration::from_secs(5), 1, 1)
    );
    assert!(!plain.mandatory && plain.matcher.is_none());
    assert_eq!(plain.host, "app");
    assert_eq!(plain.read_timeout, Duration::from_secs(60));
    assert_ne!(full.identity(), plain.identity());
}

#[test]
fn health_check_mistakes_are_errors_at_their_place() {
    let wrap = |location: &str| {
        format!(
            "http {{\nmatch m {{ status 200; }}\nupstream app {{ server 127.0.0.1:1; }}\nserver {{\nlocation / {{ {location} }}\n}}\n}}\n"
        )
    };
    let cases = [
        (
            "health_check;",
            "\"health_check\" requires \"proxy_pass\" to an upstream group in the same location in /etc/imbang/t.conf:5:14",
        ),
        (
            "proxy_pass http://$arg_u; health_check;",
            "\"health_check\" cannot be used with \"proxy_pass\" with variables: it checks the group a literal \"proxy_pass\" names in /etc/imbang/t.conf:5:40",
        ),
        (
            "proxy_pass http://app; health_check match=nope;",
            "match \"nope\" is not defined in /etc/imbang/t.conf:5:50",
        ),
        (
            "proxy_pass http://app; health_check fails=0;",
            "invalid parameter \"fails=0\" in /etc/imbang/t.conf:5:50",
        ),
        (
            "proxy_pass http://app; health_check uri=health;",
            "invalid parameter \"uri=health\" in /etc/imbang/t.conf:5:50",
        ),
        (
            "proxy_pass http://app; health_check port=70000;",
            "invalid parameter \"port=70000\" in /etc/imbang/t.conf:5:50",
        ),
        (
            "proxy_pass http://app; health_check interval=0;",
            "invalid parameter \"interval=0\" in /etc/imbang/t.conf:5:50",
        ),
        (
            "proxy_pass http://app; health_check persistent;",
            "\"persistent\" requires \"mandatory\" in \"health_check\" in /etc/imbang/t.conf:5:37",
        ),
        (
            "proxy_pass http://app; health_check type=grpc;",
            "\"type=grpc\": only HTTP health checks are supported by imbang yet in /etc/imbang/t.conf:5:50",
        ),
    ];
    for (location, want) in cases {
        assert_eq!(errors(&wrap(location)), [want], "{location}");
    }
    let c = ok(&wrap(
        "proxy_pass http://app; health_check keepalive_time=60s;",
    ));
    let warned = (c.warnings.iter()).find(|w| w.message.contains("\"keepalive_time\" parameter"));
    assert_eq!(
        warned.map(|w| (w.message.as_str(), w.location.as_str())),
        Some((
            "the \"keepalive_time\" parameter of \"health_check\" has no effect in imbang: each check opens a connection of its own",
            "/etc/imbang/t.conf:5:50"
        ))
    );
}

#[test]
fn match_block_mistakes_are_errors_at_their_place() {
    let wrap = |body: &str| format!("http {{\nmatch m {{\n{body}\n}}\n}}\n");
    let cases = [
        (
            "status 2xx;",
            "invalid status \"2xx\" in /etc/imbang/t.conf:3:8",
        ),
        (
            "status 300-200;",
            "invalid status \"300-200\" in /etc/imbang/t.conf:3:8",
        ),
        (
            "status !;",
            "invalid number of arguments in \"status\" directive in /etc/imbang/t.conf:3:1",
        ),
        (
            "status 200; status 204;",
            "\"status\" directive is duplicate in /etc/imbang/t.conf:3:13",
        ),
        (
            "header X-A == 1;",
            "invalid operator \"==\": \"header\" takes \"=\", \"!=\", \"~\" or \"!~\" in /etc/imbang/t.conf:3:12",
        ),
        (
            "header \"bad name\";",
            "invalid header name \"bad name\" in /etc/imbang/t.conf:3:8",
        ),
        (
            "body = ok;",
            "invalid operator \"=\": \"body\" takes \"~\" or \"!~\" in /etc/imbang/t.conf:3:6",
        ),
        (
            "require $ok;",
            "\"require\" is not supported by imbang yet (the variables of a check response) in /etc/imbang/t.conf:3:1",
        ),
        (
            "proxy_pass http://a;",
            "\"proxy_pass\" directive is not allowed here in /etc/imbang/t.conf:3:1",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(errors(&wrap(body)), [want], "{body}");
    }
    let got = errors(&wrap("body ~ \"(\";"));
    assert!(
        got[0].starts_with("invalid regular expression \"(\": ") && got[0].ends_with("t.conf:3:8"),
        "{got:?}"
    );
    assert_eq!(
        errors("http { match m { } match m { } }"),
        ["duplicate match \"m\" in /etc/imbang/t.conf:1:20"]
    );
    assert_eq!(
        errors("http { server { status 200; } }"),
        ["\"status\" directive is not allowed here in /etc/imbang/t.conf:1:17"]
    );
}

#[test]
fn api_is_a_locations_answer_writable_with_write_on() {
    let c = ok("http { server { location /api { api; } location /w { api write=on; } } }");
    let locations = &c.http.as_ref().unwrap().servers[0].locations;
    assert!(matches!(
        &locations[0].conf.action,
        Some(Action::Api(Api { write: false }))
    ));
    assert!(matches!(
        &locations[1].conf.action,
        Some(Action::Api(Api { write: true }))
    ));
    assert!(!c.warnings.iter().any(|w| w.message.contains("write=on")));
    assert_eq!(
        errors("http { server { location /api { api write=maybe; } } }"),
        ["invalid parameter \"write=maybe\" in /etc/imbang/t.conf:1:37"]
    );
    assert_eq!(
        errors("http { server { location /api { api; proxy_pass http://127.0.0.1:1; } } }"),
        [
            "\"api\" cannot be used with \"proxy_pass\" in the same location in /etc/imbang/t.conf:1:17"
        ]
    );
    assert_eq!(
        errors("http { server { api; } }"),
        ["\"api\" directive is not allowed here in /etc/imbang/t.conf:1:17"]
    );
}

#[test]
fn allow_and_deny_read_networks_as_nginx_and_are_inherited_only_by_levels_without_their_own() {
    let c = ok(
        "http { allow 10.1.2.3; deny 10.0.0.0/8; allow ::1; deny all;
      server { location /a { } location /b { allow 192.168.0.1/16; } } }",
    );
    let locations = &c.http.as_ref().unwrap().servers[0].locations;
    let a = &locations[0].conf.access;
    assert_eq!(a.len(), 4);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let decide = |rules: &[AccessRule], s: &str| access_allowed(rules, ip(s));
    assert!(decide(a, "10.1.2.3") && !decide(a, "10.1.2.4") && !decide(a, "10.200.0.1"));
    assert!(decide(a, "::1") && !decide(a, "::2") && !decide(a, "192.168.0.1"));
    // An IPv4 client on an IPv6 socket is tested as IPv4.
    assert!(decide(a, "::ffff:10.1.2.3") && !decide(a, "::ffff:10.1.2.4"));
    let b = &locations[1].conf.access;
    assert_eq!(b.len(), 1, "a level with rules inherits none");
    assert!(
        decide(b, "192.168.77.1") && decide(b, "8.8.8.8"),
        "no rule covers: allowed"
    );
    let warned: Vec<_> = c.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(
        warned.contains(&"low address bits of 192.168.0.1/16 are meaningless"),
        "{warned:?}"
    );
    assert_eq!(
        errors("http { deny 10.0.0.0/33; allow nope; deny 10.0.0.0/x; }"),
        [
            "invalid parameter \"10.0.0.0/33\" in /etc/imbang/t.conf:1:13",
            "invalid parameter \"nope\" in /etc/imbang/t.conf:1:32",
            "invalid parameter \"10.0.0.0/x\" in /etc/imbang/t.conf:1:43",
        ]
    );
}

#[test]
fn map_reads_keys_as_nginx_and_says_what_is_wrong() {
    let c = ok(
        r#"http { map $http_upgrade $connection_upgrade { default upgrade; '' close; }
      map $host $h { hostnames; volatile; .a.example x; *.b.example y; www.c.* z; ~*^API w; \default v; } }"#,
    );
    let maps = &c.http.as_ref().unwrap().maps;
    assert_eq!(
        (maps[0].source.as_str(), maps[0].name.as_str()),
        ("$http_upgrade", "connection_upgrade")
    );
    assert_eq!(maps[0].default, "upgrade");
    assert!(
        matches!(&maps[0].entries[..], [(MapKey::Exact(k), v)] if k.is_empty() && v == "close")
    );
    let keys: Vec<String> = (maps[1].entries.iter())
        .map(|(k, _)| match k {
            MapKey::Exact(s) => format!("={s}"),
            MapKey::Suffix { suffix, dot_too } => {
                format!("{suffix}{}", if *dot_too { "+" } else { "" })
            }
            MapKey::Prefix(p) => format!("{p}*"),
            MapKey::Regex(re) => format!("~{}", re.as_str()),
        })
        .collect();
    assert_eq!(
        keys,
        [
            ".a.example+",
            ".b.example",
            "www.c.*",
            "~(?i)^API",
            "=default"
        ]
    );
    let wrap = |body: &str| format!("http {{\nmap $host $m {{\n{body}\n}}\n}}\n");
    let cases = [
        (
            "a b c;",
            "invalid number of the map parameters in /etc/imbang/t.conf:3:1",
        ),
        (
            "default a; default b;",
            "duplicate default map parameter in /etc/imbang/t.conf:3:12",
        ),
        (
            "x a; X b;",
            "conflicting parameter \"X\" in /etc/imbang/t.conf:3:6",
        ),
        (
            "~^(x $1;",
            "invalid regular expression \"~^(x\": error: unclosed group in /etc/imbang/t.conf:3:1",
        ),
        (
            "x { }",
            "unexpected \"{\" after map key \"x\" in /etc/imbang/t.conf:3:1",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(errors(&wrap(body)), [want], "{body}");
    }
    let got = errors(&wrap("~(x a;"));
    assert!(
        got[0].starts_with("invalid regular expression \"~(x\": ")
            && got[0].ends_with("t.conf:3:1"),
        "{got:?}"
    );
    assert_eq!(
        errors("http { map $host m { } }"),
        ["invalid variable name \"m\" in /etc/imbang/t.conf:1:18"]
    );
}
