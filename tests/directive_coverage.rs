//! imbang's directive table against nginx's own (src/config/nginx-directives.tsv, derived from
//! nginx's `ngx_command_t` tables by tools/nginx-directives.py): every directive of the modules
//! imbang implements must be there, in exactly nginx's contexts and with nginx's arity. A
//! directive nginx has and imbang lacks is a failing test here, not a surprise in production.

use std::collections::BTreeMap;

use imbang::config::directives::{self, Arity, Contexts, Effect};
use imbang::config::nginx::{self, ModuleState, NginxDirective};

/// The modules imbang implements: each of their directives acts, is accepted without effect
/// (with a `-t` warning saying why), or is refused with "not implemented yet".
const COVERED_MODULES: &[&str] = &[
    // nginx core: main and events
    "ngx_core_module",
    "ngx_errlog_module",
    "ngx_events_module",
    "ngx_event_core_module",
    "ngx_epoll_module",
    "ngx_http_module",
    "ngx_regex_module",
    "ngx_thread_pool_module",
    // http
    "ngx_http_core_module",
    "ngx_http_proxy_module",
    "ngx_http_upstream_module",
    "ngx_http_upstream_keepalive_module",
    "ngx_http_upstream_zone_module",
    "ngx_http_upstream_hash_module",
    "ngx_http_upstream_ip_hash_module",
    "ngx_http_upstream_least_conn_module",
    "ngx_http_upstream_least_time_module",
    "ngx_http_upstream_random_module",
    "ngx_http_log_module",
    "ngx_http_headers_filter_module",
    "ngx_http_map_module",
    "ngx_http_access_module",
    "ngx_http_auth_basic_module",
    "ngx_http_auth_request_module",
    "ngx_http_index_module",
    "ngx_http_charset_filter_module",
    "ngx_http_sub_filter_module",
    "ngx_http_gzip_filter_module",
    "ngx_http_rewrite_module",
    "ngx_http_realip_module",
    "ngx_http_limit_req_module",
    "ngx_http_limit_conn_module",
    // nginx's ACME module (its own repository; its lines are listed by tools/nginx-directives.py)
    "ngx_http_acme_module",
    "ngx_http_stub_status_module",
];

/// Modules other work is adding right now: not checked until it lands (the integrator empties
/// this list when it does).
const PENDING_MODULES: &[&str] = &[];

/// Where imbang takes more arguments than nginx, on purpose: (directive, imbang's arity, why).
const IMBANG_EXTENSIONS: &[(&str, Arity, &str)] = &[
    (
        "hash",
        Arity::Range(1, 3),
        "`bounded=factor` after `consistent` (bounded loads)",
    ),
    (
        "limit_req_zone",
        Arity::Range(3, 4),
        "NGINX Plus's `sync` parameter (accepted with a warning: one instance has nothing to sync)",
    ),
];

fn covered() -> impl Iterator<Item = NginxDirective> {
    nginx::newest()
        .filter(|d| COVERED_MODULES.contains(&d.module) && !PENDING_MODULES.contains(&d.module))
}

#[test]
fn nginx_table_is_complete_enough_to_check() {
    // The data file holds the modules named above (a typo in a name would check nothing).
    for module in COVERED_MODULES {
        assert!(
            nginx::all().any(|d| d.module == *module),
            "{module} is not in nginx's table"
        );
    }
    assert!(covered().count() > 150);
}

#[test]
fn every_directive_of_covered_modules_is_in_imbang() {
    let mut problems = Vec::new();
    for d in covered() {
        if d.imbang_contexts().is_none() {
            continue; // only in contexts imbang has none of (`if`, `limit_except`)
        }
        let Some(spec) = d.in_imbang() else {
            problems.push(format!(
                "{} {}: missing (nginx: {} {}{})",
                d.module,
                d.name,
                d.contexts,
                d.arity,
                if d.block { " BLOCK" } else { "" }
            ));
            continue;
        };
        let extended = IMBANG_EXTENSIONS
            .iter()
            .any(|(name, arity, _)| *name == d.name && *arity == spec.arity);
        if spec.arity != d.imbang_arity() && !extended {
            problems.push(format!(
                "{} {}: arity {:?}, nginx {} ({:?})",
                d.module,
                d.name,
                spec.arity,
                d.arity,
                d.imbang_arity()
            ));
        }
        if spec.block != d.block {
            problems.push(format!("{} {}: block {}", d.module, d.name, spec.block));
        }
    }
    // Contexts: for each name, the union of imbang's entries' contexts is nginx's union over the
    // covered modules (a name such as `keepalive_requests` is in two modules, with two entries).
    // A name also in an http module not covered here (`ssl_trusted_certificate` of the ACME
    // module's issuer block and of the SSL module) has that module's contexts too.
    let names: Vec<&str> = covered().map(|d| d.name).collect();
    let mut by_name: BTreeMap<&str, Contexts> = BTreeMap::new();
    for d in nginx::newest()
        .filter(|d| !PENDING_MODULES.contains(&d.module))
        .filter(|d| COVERED_MODULES.contains(&d.module) || d.module.starts_with("ngx_http_"))
        .filter(|d| names.contains(&d.name))
    {
        if let Some(c) = d.imbang_contexts() {
            by_name
                .entry(d.name)
                .and_modify(|a| *a = a.or(c))
                .or_insert(c);
        }
    }
    for (name, want) in by_name {
        let have = imbang_contexts(name);
        if have != want {
            problems.push(format!(
                "{name}: contexts {have:?} in imbang, nginx {want:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imbang's table differs from nginx's:\n{}",
        problems.join("\n")
    );
}

/// The union of the contexts of every imbang entry named `name`, stream's left out (the
/// stream modules are not in nginx's table here; docs/stream.md lists their directives).
fn imbang_contexts(name: &str) -> Contexts {
    let stream = Contexts::STREAM
        .or(Contexts::STREAM_SERVER)
        .or(Contexts::STREAM_MATCH);
    let mut all = Contexts::from_bits(0);
    for bit in 0..16 {
        let ctx = Contexts::from_bits(1 << bit);
        if stream.contains(ctx) {
            continue;
        }
        if let Some(spec) = directives::lookup(name, ctx).filter(|s| s.contexts.contains(ctx)) {
            all = all.or(Contexts::from_bits(spec.contexts.bits() & !stream.bits()));
        }
    }
    all
}

/// The pending modules' directives imbang has are left as they are; nothing else of theirs may
/// appear in the table before the work lands (so this test notices when it does).
#[test]
fn pending_modules_are_still_pending() {
    for module in PENDING_MODULES {
        assert_ne!(
            nginx::module_state(module),
            ModuleState::Present,
            "{module} landed: remove it from PENDING_MODULES"
        );
    }
}

/// Covered modules whose main work is refused as "not supported yet" (their companions are
/// accepted): `-V` does not claim them.
const REFUSED_MODULES: &[&str] = &[];

#[test]
fn every_covered_module_is_present() {
    for module in COVERED_MODULES
        .iter()
        .filter(|m| !PENDING_MODULES.contains(m))
    {
        let want = if REFUSED_MODULES.contains(module) {
            ModuleState::Partial
        } else {
            ModuleState::Present
        };
        assert_eq!(nginx::module_state(module), want, "{module}");
    }
}

#[test]
fn no_effect_reasons_are_worded() {
    for spec in directives::DIRECTIVES {
        if let Effect::NoEffect(why) | Effect::NotYet(why) = spec.effect {
            assert!(
                why.len() > 10 && !why.ends_with('.'),
                "{}: reason {why:?}",
                spec.name
            );
        }
    }
}

/// `imbang -V`'s `configure arguments:` line names exactly the modules imbang's table has, the
/// way nginx's build prints them: `--with-…` for an optional module that is there, `--without-…`
/// for a default one that is not. The expectation is worked out here from the table itself.
#[test]
fn dash_big_v_lists_the_modules_the_table_has() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imbang"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("configure arguments: "))
        .unwrap();
    let got: Vec<&str> = line
        .split(' ')
        .filter(|a| a.starts_with("--with-") || a.starts_with("--without-"))
        .collect();

    let mut want = Vec::new();
    let mut without = Vec::new();
    for line in nginx::OPTIONS_TSV.lines().filter(|l| !l.starts_with('#')) {
        let (kind, option) = line.split_once('\t').unwrap();
        if !option.starts_with("http_") {
            continue; // imbang has no stream or mail
        }
        let module = ["", "_filter"]
            .iter()
            .map(|f| format!("ngx_{}{f}_module", option.trim_end_matches("_module")))
            .find(|m| nginx::all().any(|d| d.module == m));
        let Some(module) = module else { continue };
        let lines: Vec<NginxDirective> = nginx::newest().filter(|d| d.module == module).collect();
        let specs: Vec<_> = lines.iter().map(|d| d.in_imbang()).collect();
        let all_in = specs.iter().all(Option::is_some);
        let acts = specs.iter().flatten().any(|s| s.effect == Effect::Acts);
        let refused = specs
            .iter()
            .flatten()
            .any(|s| matches!(s.effect, Effect::NotYet(_)));
        let present = all_in && (acts || !refused);
        match (kind, present) {
            ("with", true) => want.push(format!("--with-{option}")),
            ("without", false) => without.push(format!("--without-{option}")),
            _ => {}
        }
    }
    // stream's modules (docs/stream.md), which nginx's table here does not hold.
    for option in [
        "stream",
        "stream_realip_module",
        "stream_ssl_preread_module",
    ] {
        want.push(format!("--with-{option}"));
    }
    want.append(&mut without);
    want.push("--without-http-cache".to_owned());
    assert_eq!(got, want);

    // What the issue found wrong, and what must stay true.
    for implemented in [
        "map",
        "access",
        "proxy",
        "upstream_keepalive",
        "upstream_hash",
    ] {
        let flag = format!("--without-http_{implemented}_module");
        assert!(!got.contains(&flag.as_str()), "{flag} in {got:?}");
    }
    for lacking in ["fastcgi", "uwsgi", "grpc", "ssi", "geo"] {
        let flag = format!("--without-http_{lacking}_module");
        assert!(got.contains(&flag.as_str()), "no {flag} in {got:?}");
    }
}

// === docs/directives.md: generated from the table, checked here ===

/// How nginx's documentation names a context.
fn context_words(contexts: &str) -> String {
    contexts
        .split('|')
        .map(|c| match c {
            "MAIN" => "main",
            "EVENT" => "events",
            "HTTP_MAIN" => "http",
            "HTTP_SRV" => "server",
            "HTTP_LOC" => "location",
            "HTTP_UPS" => "upstream",
            "HTTP_SIF" => "if in server",
            "HTTP_LIF" => "if in location",
            "HTTP_LMT" => "limit_except",
            "ACME_ISSUER" => "acme_issuer",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn arity_words(arity: Arity, block: bool) -> String {
    let args = match arity {
        Arity::Flag => "`on` \\| `off`".to_owned(),
        Arity::Range(0, 0) => "no arguments".to_owned(),
        Arity::Range(1, 1) => "1 argument".to_owned(),
        Arity::Range(a, b) if a == b => format!("{a} arguments"),
        Arity::Range(a, b) => format!("{a}–{b} arguments"),
        Arity::AtLeast(0) => "any arguments".to_owned(),
        Arity::AtLeast(n) => format!("{n} or more arguments"),
    };
    if block {
        format!("{args}, then `{{ }}`")
    } else {
        args
    }
}

/// What imbang does with one directive, in the page's words.
fn effect_words(d: &NginxDirective) -> String {
    if PENDING_MODULES.contains(&d.module) {
        return match d.in_imbang() {
            Some(_) => "acts (being completed)".to_owned(),
            None => "being added (not supported yet)".to_owned(),
        };
    }
    if d.imbang_contexts().is_none() {
        return "not supported (imbang has none of its contexts yet)".to_owned();
    }
    let Some(spec) = d.in_imbang() else {
        return "not supported".to_owned();
    };
    match spec.effect {
        Effect::Acts => match imbang::config::lower::only_value(d.name) {
            Some((value, instead)) => {
                format!("acts for `{value}` only; other values are refused: {instead}")
            }
            None => "acts".to_owned(),
        },
        Effect::NoEffect(why) => format!("accepted without effect: {why}"),
        Effect::NotYet(why) => format!("refused, not supported yet: {why}"),
    }
}

fn directives_page() -> String {
    let mut page = String::from(
        "# Directives: what imbang does with each of nginx's\n\n\
         <!-- Generated from imbang's directive table (src/config/directives.rs) and nginx's \
         (src/config/nginx-directives.tsv) by tests/directive_coverage.rs; \
         `IMBANG_BLESS=1 cargo test --test directive_coverage` rewrites it. -->\n\n\
         imbang reads nginx's configuration files unchanged. For every directive of the nginx \
         modules it implements, this page says what happens to it:\n\n\
         - **acts**: imbang does what nginx does with it.\n\
         - **acts for `x` only**: imbang's fixed behaviour is that value (nginx's default, \
         mostly); any other value is refused with `-t`, so no configuration runs with a meaning \
         it was not written for.\n\
         - **accepted without effect**: the directive's job is done differently, or not needed, \
         in imbang; `imbang -t` prints `the \"x\" directive has no effect in imbang: why`.\n\
         - **refused, not supported yet**: the configuration is rejected with `\"x\" directive is \
         not supported by imbang yet (why)` at its `file:line:col`.\n\n\
         Contexts and numbers of arguments are nginx's (release 1.22.1 and the newest release; a \
         directive only one of them has says so). A directive of a module imbang does not have \
         (fastcgi, uwsgi, grpc, ssi, geo, ...) is an `unknown directive`, and the message names \
         the module: `unknown directive \"fastcgi_pass\" (ngx_http_fastcgi_module is not part \
         of imbang)`. `imbang -V` lists the modules the same table says imbang has, as nginx's \
         `configure arguments:` would.\n\n\
         ## Where imbang differs from nginx\n\n\
         - `proxy_cookie_domain`, `proxy_cookie_path`, `proxy_cookie_flags`: rewritten as nginx \
         rewrites them (same `Set-Cookie` bytes, checked against nginx 1.22), but the patterns, \
         replacements and flags take no variables (a regex's `$1`..`$9` aside), and an unknown \
         flag is an error at `-t` (nginx ignores it at run time).\n\
         - `charset`: `; charset=X` is added as nginx adds it; imbang does not recode, so \
         `charset_map`, `override_charset on` and a `source_charset` other than `charset` are \
         refused (nginx refuses the last one too when it has no `charset_map`). No variables.\n\
         - `expires`: `off`, `epoch`, `max` and times act; `modified`, `@time` and variables are \
         refused.\n\
         - `hash` in `upstream` takes imbang's `bounded=factor` after `consistent`.\n\
         - `keepalive_time` at http, server and location level (the longest a client connection \
         lives) is accepted without effect; in `upstream` it acts.\n\
         - Inside `limit_except` imbang reads `allow`, `deny`, `access_log` and `proxy_pass`; \
         `auth_basic` there is refused (imbang has none).\n\
         - Example: an `nginx.conf` like those of nginx's packages and Docker images (temp paths of every \
         module, `load_module`, `sendfile`, `tcp_nopush`, `types_hash_max_size`, `gzip_buffers`) passes \
         `imbang -t` with a warning for each directive that has no effect.\n",
    );
    let mut module = "";
    for d in nginx::newest().filter(|d| COVERED_MODULES.contains(&d.module)) {
        if d.module != module {
            module = d.module;
            page.push_str(&format!(
                "\n## {module}\n\n| directive | context | arguments | imbang |\n|---|---|---|---|\n"
            ));
        }
        let changed = nginx::all()
            .filter(|o| o.module == d.module && o.name == d.name)
            .count()
            > 1;
        let since = match d.versions {
            "both" => String::new(),
            v if changed => format!(" (as in nginx {v})"),
            v => format!(" (nginx {v} only)"),
        };
        page.push_str(&format!(
            "| `{}`{since} | {} | {} | {} |\n",
            d.name,
            context_words(d.contexts),
            arity_words(d.imbang_arity(), d.block),
            effect_words(&d)
        ));
    }
    // The rest of nginx: what "unknown directive (… is not part of imbang)" names.
    let mut absent: Vec<&str> = Vec::new();
    for d in nginx::all() {
        // `include` (ngx_conf_module) is expanded by imbang's parser.
        let skip = COVERED_MODULES.contains(&d.module) || d.module == "ngx_conf_module";
        if !skip && !absent.contains(&d.module) {
            absent.push(d.module);
        }
    }
    page.push_str(
        "\n## nginx modules imbang does not have\n\n\
         Their directives are unknown to imbang (a few are accepted without effect where \
         nginx's stock configuration carries them, such as `fastcgi_temp_path` and \
         `ssl_protocols`; see `imbang -t`):\n\n",
    );
    page.push_str(
        &absent
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    page.push('\n');
    // imbang's own: NGINX Plus directives it implements, which nginx's open source lacks.
    page.push_str(
        "\n## NGINX Plus directives imbang has\n\n\
         Not in nginx's open-source modules; imbang implements them as NGINX Plus documents \
         them.\n\n| directive | imbang |\n|---|---|\n",
    );
    let mut seen = Vec::new();
    for spec in directives::DIRECTIVES {
        let in_nginx = nginx::all().any(|d| d.name == spec.name);
        if in_nginx || seen.contains(&spec.name) {
            continue;
        }
        seen.push(spec.name);
        let effect = match spec.effect {
            Effect::Acts => "acts".to_owned(),
            Effect::NoEffect(why) => format!("accepted without effect: {why}"),
            Effect::NotYet(why) => format!("refused, not supported yet: {why}"),
        };
        page.push_str(&format!("| `{}` | {effect} |\n", spec.name));
    }
    page
}

#[test]
fn docs_page_matches_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/directives.md");
    let want = directives_page();
    if std::env::var_os("IMBANG_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/directives.md is not what the table says; rewrite it with \
         IMBANG_BLESS=1 cargo test --test directive_coverage"
    );
}

/// What may stand inside `if`: every directive of a covered module that nginx allows in a
/// location's `if` (`NGX_HTTP_LIF_CONF`) is in imbang's `IF_DIRECTIVES`, marked for a server's
/// `if` exactly when nginx allows it there too (`NGX_HTTP_SIF_CONF`), and nothing more.
#[test]
fn if_blocks_allow_what_nginx_allows() {
    let mut want: BTreeMap<&str, bool> = BTreeMap::new();
    for d in covered() {
        let flags: Vec<&str> = d.contexts.split('|').collect();
        if flags.contains(&"HTTP_LIF") || flags.contains(&"HTTP_SIF") {
            want.insert(d.name, flags.contains(&"HTTP_SIF"));
        }
    }
    assert!(want.len() >= 15, "nginx's list is read: {want:?}");
    let ours: BTreeMap<&str, bool> = directives::IF_DIRECTIVES
        .iter()
        .copied()
        .filter(|(name, _)| want.contains_key(name))
        .collect();
    assert_eq!(ours, want, "IF_DIRECTIVES against nginx's SIF/LIF flags");
    // Entries beyond the covered modules must still be nginx's (a module imbang lacks, whose
    // directive then fails as unknown inside `if` as anywhere).
    for (name, _) in directives::IF_DIRECTIVES {
        let theirs = nginx::newest().find(|d| d.name == *name);
        assert!(
            theirs.is_some_and(|d| d.contexts.contains("HTTP_LIF")),
            "{name} is in IF_DIRECTIVES but nginx does not allow it in if"
        );
    }
}
