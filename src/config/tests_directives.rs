//! The directives of nginx's modules that imbang covers: distribution configs read, values imbang
//! does not implement are refused, and directives of modules imbang lacks name the module.

use std::path::PathBuf;

use super::*;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    let opts = LoadOptions {
        prefix: PathBuf::from("/prefix/"),
        default_listen_port: 8000,
    };
    parse_str("/etc/imbang/t.conf", text, &opts)
        .map_err(|e| e.iter().map(|e| e.to_string()).collect())
}

fn warnings(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => c.warnings.iter().map(|w| w.message.clone()).collect(),
        Err(e) => panic!("unexpected errors:\n{}", e.join("\n")),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

/// The `nginx.conf` of Debian's and of nginx's own packages and images, with the temp paths and
/// dynamic modules that come with them, reads (with warnings).
#[test]
fn distribution_configs_read() {
    let w = warnings(
        "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\nload_module modules/ngx_http_image_filter_module.so;\n\
         load_module modules/ngx_stream_module.so; env TZ; env LANG;\n\
         events { worker_connections 768; multi_accept on; }\n\
         http {\n sendfile on; tcp_nopush on; types_hash_max_size 2048; server_tokens off;\n\
         default_type application/octet-stream;\n\
         client_body_temp_path /var/cache/nginx/client_temp;\n proxy_temp_path /var/cache/nginx/proxy_temp 1 2;\n\
         fastcgi_temp_path /var/cache/nginx/fastcgi_temp;\n uwsgi_temp_path /var/cache/nginx/uwsgi_temp;\n\
         scgi_temp_path /var/cache/nginx/scgi_temp;\n\
         keepalive_disable msie6; keepalive_time 1h; proxy_max_temp_file_size 0;\n\
         proxy_cache_path /var/cache/nginx/app levels=1:2 keys_zone=app:10m;\n\
         server { listen 127.0.0.1:8080; keepalive_time 10m;\n\
           location / { proxy_pass http://127.0.0.1:9; proxy_cache_bypass $http_pragma; proxy_no_cache 1;\n\
             proxy_temp_file_write_size 64k; chunked_transfer_encoding on; charset off; } } }\n",
    );
    for name in [
        "load_module",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
        "keepalive_disable",
        "proxy_max_temp_file_size",
        "proxy_cache_path",
        "proxy_cache_bypass",
        "proxy_no_cache",
        "proxy_temp_file_write_size",
    ] {
        let prefix = format!("the \"{name}\" directive has no effect in imbang: ");
        assert!(
            w.iter().any(|w| w.starts_with(&prefix)),
            "no warning for {name} in {w:#?}"
        );
    }
    // `client_body_temp_path` acts: where buffered request bodies go.
    assert!(
        !w.iter().any(|w| w.contains("client_body_temp_path")),
        "{w:#?}"
    );
}

#[test]
fn directives_of_modules_imbang_lacks_name_the_module() {
    let got = errors(
        "http { server { location / { fastcgi_pass 127.0.0.1:9000; uwsgi_pass 127.0.0.1:9001; } }\n\
         geoip_country /usr/share/GeoIP/GeoIP.dat; no_such_thing on; } mail { }\n",
    );
    assert_eq!(
        got,
        [
            "unknown directive \"geoip_country\" (ngx_http_geoip_module is not part of imbang) in /etc/imbang/t.conf:2:1",
            "unknown directive \"no_such_thing\" in /etc/imbang/t.conf:2:43",
            "unknown directive \"fastcgi_pass\" (ngx_http_fastcgi_module is not part of imbang) in /etc/imbang/t.conf:1:30",
            "unknown directive \"uwsgi_pass\" (ngx_http_uwsgi_module is not part of imbang) in /etc/imbang/t.conf:1:59",
            "unknown directive \"mail\" (ngx_mail_module is not part of imbang) in /etc/imbang/t.conf:2:63",
        ]
    );
}

#[test]
fn values_imbang_does_not_implement_are_refused() {
    let got = errors(
        "http { proxy_cache app; chunked_transfer_encoding off; expires 1h; merge_slashes off;\n\
         proxy_cookie_path /app/ /; recursive_error_pages on; limit_rate 10k; }\n",
    );
    assert_eq!(
        got,
        [
            "\"proxy_cache\" directive is not supported by imbang yet (caching is not implemented yet) in /etc/imbang/t.conf:1:8",
            "\"merge_slashes off\" is not supported by imbang yet (only \"merge_slashes on\": slashes in a URI are always merged for location matching) in /etc/imbang/t.conf:1:68",
            "\"recursive_error_pages on\" is not supported by imbang yet (only \"recursive_error_pages off\": the target of an error_page never applies error_page again) in /etc/imbang/t.conf:2:28",
            "\"limit_rate\" directive is not supported by imbang yet (responses are not rate-limited) in /etc/imbang/t.conf:2:54",
        ]
    );
}

#[test]
fn contexts_and_arity_are_nginx_s() {
    let got = errors(
        "proxy_cache_path /a keys_zone=a:1m;\nhttp { server { proxy_cache_path /b keys_zone=b:1m; }\n\
         keepalive_disable a b c; map_hash_max_size; }\n",
    );
    assert_eq!(
        got,
        [
            "\"proxy_cache_path\" directive is not allowed here in /etc/imbang/t.conf:1:1",
            "invalid number of arguments in \"keepalive_disable\" directive in /etc/imbang/t.conf:3:1",
            "invalid number of arguments in \"map_hash_max_size\" directive in /etc/imbang/t.conf:3:26",
            "\"proxy_cache_path\" directive is not allowed here in /etc/imbang/t.conf:2:17",
        ]
    );
}

#[test]
fn error_log_takes_nginx_s_debug_masks() {
    let c = parse("error_log /l debug_http debug_event;\nerror_log /m warn;\n").unwrap();
    let levels: Vec<_> = c.main.error_log.iter().map(|l| l.level).collect();
    assert_eq!(levels, [model::LogLevel::Debug, model::LogLevel::Warn]);
    assert_eq!(
        errors("error_log /l warn info;\n"),
        ["duplicate log level \"info\" in /etc/imbang/t.conf:1:19"]
    );
}

#[test]
fn upstream_keepalive_takes_local() {
    let c = parse("http { upstream u { server 127.0.0.1:1; keepalive 8 local; } }\n").unwrap();
    assert_eq!(
        c.warnings.last().map(|w| w.message.as_str()),
        Some("the \"local\" parameter of \"keepalive\" has no effect in imbang")
    );
    assert_eq!(c.http.unwrap().upstreams[0].keepalive, 8);
    assert_eq!(
        errors("http { upstream u { server 127.0.0.1:1; keepalive 8 global; } }\n"),
        ["invalid value \"global\" in \"keepalive\" directive in /etc/imbang/t.conf:1:53"]
    );
}
