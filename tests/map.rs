//! `map` (nginx's map module): values chosen from other variables, per request, imbang
//! in-process answering with `return` so the client sees each value.
mod support;

use support::imbang;

#[tokio::test]
async fn exact_keys_then_wildcards_then_regexes_then_the_default() {
    let lb = imbang(
        r#"daemon off; error_log stderr crit;
        http {
          map $arg_t $site_tail { default tail; ''  empty; Yes  yes; ~*^no$ no; }
          map $host $site {
            hostnames;
            default             other;
            example.com         exact;
            .example.org        org-and-subdomains;
            *.example.net       net-subdomains;
            *.a.example.net     deeper;
            www.example.*       www;
            ~^api\d+\.          api-$site_tail;
            \~tilde             escaped;
          }
          map $site $chained { default "site=$site"; exact was-exact; }
          server { listen 127.0.0.1:0;
            location / { return 200 "$site|$chained"; }
          }
        }"#,
    )
    .await;
    let cases = [
        ("example.com", "/", "exact|was-exact"),
        ("EXAMPLE.com", "/", "exact|was-exact"),
        (
            "example.org",
            "/",
            "org-and-subdomains|site=org-and-subdomains",
        ),
        (
            "x.y.example.org",
            "/",
            "org-and-subdomains|site=org-and-subdomains",
        ),
        ("example.net", "/", "other|site=other"),
        ("x.example.net", "/", "net-subdomains|site=net-subdomains"),
        ("x.a.example.net", "/", "deeper|site=deeper"),
        ("www.example.de", "/", "www|site=www"),
        ("api7.example.de", "/", "api-empty|site=api-empty"),
        ("api7.example.de", "/?t=zzz", "api-tail|site=api-tail"),
        ("api7.example.de", "/?t=YES", "api-yes|site=api-yes"),
        ("api7.example.de", "/?t=No", "api-no|site=api-no"),
        ("~tilde", "/", "escaped|site=escaped"),
        ("nothing.test", "/", "other|site=other"),
    ];
    for (host, path, want) in cases {
        assert_eq!(
            lb.get_host(host, path).await,
            (200, want.to_owned()),
            "{host}{path}"
        );
    }
}

#[test]
fn a_map_may_not_redefine_a_variable_or_use_one_defined_after_it() {
    let check = |maps: &str| {
        support::compile(&format!(
            "events {{}} http {{ {maps} server {{ listen 127.0.0.1:0; set $s 1; location / {{ return 200 $a; }} }} }}"
        ))
    };
    assert_eq!(check("map $uri $a { default x; }"), Ok(()));
    assert_eq!(
        check("map $uri $host { default x; } map $uri $a { }"),
        Err("the duplicate \"host\" variable in /t/imbang.conf:1:18".to_owned())
    );
    assert_eq!(
        check("map $uri $s { default x; } map $uri $a { }"),
        Err("the duplicate \"s\" variable in /t/imbang.conf:1:18".to_owned())
    );
    // The map it names is written later: an error at the first map (and `$a` stays unknown).
    let got = check("map $b $a { default x; } map $uri $b { }").unwrap_err();
    assert_eq!(
        got.lines().next(),
        Some("unknown \"b\" variable in /t/imbang.conf:1:18"),
        "{got}"
    );
}

const CAPTURES_HTTP: &str = r#"
    map $uri $x {
        ~^/a/(?<rest>.*)$       /b/$rest;
        ~^/c/(.*)$              $1;
        ~*^/D/(\d+)-(\w+)$      "$2:$1";
        ~^/e/(?<part>x)?y$      "[$part]";
        default                 none;
    }
    server { listen {listen};
        location / { return 200 "$x"; }
        location ~ ^/loc/(.*)$ { return 200 "$1|$x|$1"; }
    }"#;

/// (path, body) as nginx 1.22 answers through `CAPTURES_HTTP`.
const CAPTURES_EXPECTED: &[(&str, &str)] = &[
    ("/a/foo/bar", "/b/foo/bar"),
    ("/c/zz", "zz"),
    ("/d/12-ab", "ab:12"),
    ("/e/y", "[]"),
    ("/e/xy", "[x]"),
    ("/other", "none"),
    // The location's `$1` stays the location's around the map's.
    ("/loc/a/q", "a/q|none|a/q"),
];

#[tokio::test]
async fn a_value_chosen_by_a_regex_sees_its_groups() {
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}} http {{ access_log off; {} }}",
        CAPTURES_HTTP.replace("{listen}", "127.0.0.1:0")
    ))
    .await;
    for (path, want) in CAPTURES_EXPECTED {
        assert_eq!(lb.get(path).await, (200, (*want).to_owned()), "{path}");
    }
    // A named group is a variable everywhere (empty where no map regex set it).
    assert_eq!(
        support::compile(
            "events {} http { map $uri $x { ~^/(?<seg>[a-z]+) $seg; }
             server { listen 127.0.0.1:0; location / { return 200 \"$seg\"; } } }"
        ),
        Ok(())
    );
}

#[tokio::test]
async fn nginx_answers_captures_the_same() {
    let dir = support::TempDir::new("map-captures-nginx");
    let http = format!(
        "access_log off; {}",
        CAPTURES_HTTP.replace("{listen}", "127.0.0.1:{listen}")
    );
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http).await else {
        return;
    };
    for (path, want) in CAPTURES_EXPECTED {
        let got = support::request(addr, "GET", path, "t", None).await;
        assert_eq!(got, (200, (*want).to_owned()), "nginx: {path}");
    }
}
